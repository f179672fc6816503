package ice

import (
	"bytes"
	"net/netip"
	"testing"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
)

// The consent messages built by hand are byte for byte what pion/stun
// builds from the same attributes, in the same order: a check, with
// either role, and an answer to IPv4, IPv6 and IPv4-mapped sources.
func TestConsentMessagesAsPionBuildsThem(t *testing.T) {
	id := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, controlling := range []bool{true, false} {
		cs := &consentSession{
			localUfrag: "loc", localPwd: "the local password, 22+ chars",
			remoteUfrag: "remoteUfrag", remotePwd: "the remote password, 22+ chars",
			controlling: controlling, tieBreaker: 0x1122334455667788, priority: 0x6e0001ff,
		}
		var role stun.Setter = pice.AttrControlled(cs.tieBreaker)
		if controlling {
			role = pice.AttrControlling(cs.tieBreaker)
		}
		want, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingRequest,
			stun.NewUsername(cs.remoteUfrag+":"+cs.localUfrag), role, pice.PriorityAttr(cs.priority),
			stun.NewShortTermIntegrity(cs.remotePwd), stun.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		// Twice: the second time with the HMAC kept from the first.
		for range 2 {
			if got := cs.appendConsentRequest(nil, id); !bytes.Equal(got, want.Raw) {
				t.Fatalf("controlling=%v: check\n%x\nwant (pion)\n%x", controlling, got, want.Raw)
			}
		}
		for _, src := range []string{"192.0.2.7:3478", "[2001:db8::1]:50000", "[::ffff:198.51.100.2]:9"} {
			a := netip.MustParseAddrPort(src)
			want, err := stun.Build(stun.NewTransactionIDSetter(id), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: a.Addr().AsSlice(), Port: int(a.Port())},
				stun.NewShortTermIntegrity(cs.localPwd), stun.Fingerprint)
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.appendConsentAnswer(nil, id, a); !bytes.Equal(got, want.Raw) {
				t.Fatalf("answer to %s\n%x\nwant (pion)\n%x", src, got, want.Raw)
			}
			if !fingerprintOK(want.Raw) {
				t.Fatalf("fingerprintOK refuses pion's answer to %s", src)
			}
		}
	}
}

// fingerprintOK refuses what pion/stun's decoder and Fingerprint.Check
// refuse, and a FINGERPRINT that is not the last attribute.
func TestFingerprintOK(t *testing.T) {
	m, err := stun.Build(stun.TransactionID, stun.BindingSuccess, stun.NewSoftware("x"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	good := m.Raw
	if !fingerprintOK(good) {
		t.Fatal("refuses a good message")
	}
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 1; return b }
	notLast, err := stun.Build(stun.TransactionID, stun.BindingSuccess, stun.Fingerprint, stun.NewSoftware("x"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"a bit of the CRC":         flip(len(good) - 1),
		"a bit of the header":      flip(9),
		"a bit of an attribute":    flip(24),
		"cut short":                good[:len(good)-1],
		"a byte more":              append(bytes.Clone(good), 0),
		"no FINGERPRINT":           good[:len(good)-8],
		"FINGERPRINT not the last": notLast.Raw,
		"header only":              good[:20],
	} {
		if fingerprintOK(b) {
			t.Errorf("%s: passes", name)
		}
	}
}

// FuzzFingerprintOK: fingerprintOK passes exactly the messages that pion
// decodes whole, whose last attribute is a FINGERPRINT and that pass
// pion's Fingerprint.Check.
func FuzzFingerprintOK(f *testing.F) {
	for _, setters := range [][]stun.Setter{
		{stun.TransactionID, stun.BindingRequest, stun.NewUsername("a:b"), stun.NewShortTermIntegrity("pwd"), stun.Fingerprint},
		{stun.TransactionID, stun.BindingSuccess, stun.Fingerprint},
		{stun.TransactionID, stun.BindingSuccess, stun.NewSoftware("x")},
	} {
		m, err := stun.Build(setters...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := fingerprintOK(b)
		m := &stun.Message{Raw: bytes.Clone(b)}
		want := len(b) >= stunHeaderLen+8 && m.Decode() == nil && stunHeaderLen+int(m.Length) == len(b) &&
			len(m.Attributes) > 0 && m.Attributes[len(m.Attributes)-1].Type == stun.AttrFingerprint &&
			m.Attributes[len(m.Attributes)-1].Length == 4 && stun.Fingerprint.Check(m) == nil
		if got != want {
			t.Fatalf("fingerprintOK(%x) = %v, pion says %v", b, got, want)
		}
	})
}
