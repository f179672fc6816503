package ice

import "testing"

// RFC 5769 section 2.1: a sample request signed with a short-term
// credential (password "VOkJxbRl1RmTxUk/WvJxBt").
const rfc5769Request = "\x00\x01\x00\x58" +
	"\x21\x12\xa4\x42" +
	"\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae" +
	"\x80\x22\x00\x10" +
	"STUN test client" +
	"\x00\x24\x00\x04" +
	"\x6e\x00\x01\xff" +
	"\x80\x29\x00\x08" +
	"\x93\x2f\xf9\xb1\x51\x26\x3b\x36" +
	"\x00\x06\x00\x09" +
	"\x65\x76\x74\x6a\x3a\x68\x36\x76\x59\x20\x20\x20" +
	"\x00\x08\x00\x14" +
	"\x9a\xea\xa7\x0c\xbf\xd8\xcb\x56\x78\x1e\xf2\xb5" +
	"\xb2\xd3\xf2\x49\xc1\xb5\x71\xa2" +
	"\x80\x28\x00\x04" +
	"\xe5\x7a\x3b\xcf"

func TestSTUNIntegrityRFC5769(t *testing.T) {
	const pwd = "VOkJxbRl1RmTxUk/WvJxBt"
	orig := []byte(rfc5769Request)
	if !authentic(orig, pwd) {
		t.Fatal("the RFC 5769 sample request does not pass under its password")
	}
	changed := func(i int) []byte {
		b := append([]byte(nil), orig...)
		b[i] ^= 1
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		key  string
		want bool
	}{
		{"wrong password", orig, pwd + "x", false},
		{"no password", orig, "", false},
		{"changed header", changed(9), pwd, false},
		{"changed attribute", changed(60), pwd, false},
		{"changed HMAC", changed(len(orig) - 9), pwd, false},
		{"changed FINGERPRINT (not covered)", changed(len(orig) - 1), pwd, true},
		{"without MESSAGE-INTEGRITY", orig[:76], pwd, false},
		{"MESSAGE-INTEGRITY cut short", orig[:len(orig)-12], pwd, false},
		{"header only", orig[:stunHeaderLen], pwd, false},
	} {
		if got := authentic(c.b, c.key); got != c.want {
			t.Errorf("%s: authentic = %v, want %v", c.name, got, c.want)
		}
	}
	if string(orig) != rfc5769Request {
		t.Error("authentic changed the message")
	}
}
