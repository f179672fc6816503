package sdp

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/bits"
	"strconv"
	"strings"
)

// Crypto is one SDES "a=crypto" line (RFC 4568): a crypto suite and the
// SRTP master key and salt that its sender uses, carried in the clear in
// the description. Use it only when the signaling is encrypted end to end
// or hop by hop (SIP over TLS, HTTPS, WSS).
//
// Key is secret: String, GoString and LogValue print it redacted.
type Crypto struct {
	// Tag identifies the line within its media section, 0 to 999999999;
	// the answer repeats the tag of the offer line it accepts. NewOffer
	// numbers lines from 1 when Tag is zero.
	Tag int
	// Suite is the crypto suite name of RFC 4568 or RFC 7714, such as
	// "AES_CM_128_HMAC_SHA1_80" or "AEAD_AES_128_GCM".
	Suite string
	// Key is the SRTP master key followed by the master salt, decoded from
	// the "inline:" key parameter; its length must fit the suite.
	Key []byte
	// Lifetime is the key's lifetime in packets; 0 means absent.
	Lifetime uint64
	// MKI is the master key identifier value; meaningful only when
	// MKILength is not zero.
	MKI uint32
	// MKILength is the MKI's length in bytes on the wire, 1 to 4; 0 means
	// no MKI.
	MKILength int
	// MoreKeys are the further key parameters of a line that carries
	// several master keys, told apart by their MKI (RFC 4568 section
	// 9.2: "inline:K1|2^20|1:4;inline:K2|2^20|2:4"); nil for the usual
	// line with one key. Negotiation does not pick such a line: a media
	// session here holds one master key per direction.
	MoreKeys []CryptoKey
	// Params are the session parameters that follow the key parameter,
	// such as "UNENCRYPTED_SRTCP" or "KDR=0", kept verbatim.
	Params []string
}

// CryptoKey is one further key parameter of an "a=crypto" line: a master
// key and salt with its lifetime and MKI, as in [Crypto]. Key is secret and
// prints redacted.
type CryptoKey struct {
	// Key is the master key followed by the master salt.
	Key []byte
	// Lifetime is the key's lifetime in packets; 0 means absent.
	Lifetime uint64
	// MKI and MKILength are the key's master key identifier, as in
	// [Crypto].
	MKI       uint32
	MKILength int
}

// String returns a summary with the key redacted.
func (k CryptoKey) String() string {
	return fmt.Sprintf("{Key:%s Lifetime:%d MKI:%d MKILength:%d}", redactBytes(k.Key), k.Lifetime, k.MKI, k.MKILength)
}

// GoString returns a Go-syntax form with the key redacted.
func (k CryptoKey) GoString() string {
	return fmt.Sprintf("sdp.CryptoKey{Key:%q, Lifetime:%d, MKI:%d, MKILength:%d}", redactBytes(k.Key), k.Lifetime, k.MKI, k.MKILength)
}

// String returns a summary with the key redacted.
func (c Crypto) String() string {
	more := ""
	if len(c.MoreKeys) > 0 {
		more = fmt.Sprintf(" MoreKeys:%v", c.MoreKeys)
	}
	return fmt.Sprintf("{Tag:%d Suite:%s Key:%s Lifetime:%d MKI:%d MKILength:%d%s Params:%v}",
		c.Tag, c.Suite, redactBytes(c.Key), c.Lifetime, c.MKI, c.MKILength, more, c.Params)
}

// GoString returns a Go-syntax form with the key redacted.
func (c Crypto) GoString() string {
	return fmt.Sprintf("sdp.Crypto{Tag:%d, Suite:%q, Key:%q, Lifetime:%d, MKI:%d, MKILength:%d, MoreKeys:%#v, Params:%#v}",
		c.Tag, c.Suite, redactBytes(c.Key), c.Lifetime, c.MKI, c.MKILength, c.MoreKeys, c.Params)
}

// LogValue returns the line for slog with the key redacted.
func (c Crypto) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int("tag", c.Tag),
		slog.String("suite", c.Suite),
		slog.String("key", redactBytes(c.Key)),
		slog.Uint64("lifetime", c.Lifetime),
		slog.Int("mki_length", c.MKILength),
		slog.Int("more_keys", len(c.MoreKeys)),
	)
}

var _ slog.LogValuer = Crypto{}

func redactBytes(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return redacted
}

// suiteKeyLengths maps the SRTP crypto suites this package knows to the
// length of master key plus master salt (RFC 4568 section 6.2, RFC 6188,
// RFC 7714 section 12).
var suiteKeyLengths = map[string]int{
	"AES_CM_128_HMAC_SHA1_80": 16 + 14,
	"AES_CM_128_HMAC_SHA1_32": 16 + 14,
	"AES_192_CM_HMAC_SHA1_80": 24 + 14,
	"AES_192_CM_HMAC_SHA1_32": 24 + 14,
	"AES_256_CM_HMAC_SHA1_80": 32 + 14,
	"AES_256_CM_HMAC_SHA1_32": 32 + 14,
	"AEAD_AES_128_GCM":        16 + 12,
	"AEAD_AES_256_GCM":        32 + 12,
}

// SuiteKeyLength returns the length in bytes of the master key plus
// master salt of an SRTP crypto suite, and false for a suite this package
// does not know.
func SuiteKeyLength(suite string) (int, bool) {
	n, ok := suiteKeyLengths[suite]
	return n, ok
}

// maxTag is the largest tag RFC 4568 allows (1*9DIGIT).
const maxTag = 999999999

// parseCrypto parses an "a=crypto" value, or says why it is not one. Keys
// of suites this package does not know are decoded but their length is
// not checked; negotiation never picks such a suite.
func parseCrypto(v string) (Crypto, string) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return Crypto{}, "crypto needs a tag, a suite and a key parameter"
	}
	var c Crypto
	tag, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || tag > maxTag {
		return Crypto{}, "crypto tag must be a number from 0 to 999999999"
	}
	c.Tag = int(tag)
	if !isToken(f[1]) {
		return Crypto{}, "crypto suite must be a token"
	}
	c.Suite = f[1]
	params := strings.Split(f[2], ";")
	if len(params) > maxCryptoKeys {
		return Crypto{}, "crypto line has more than " + strconv.Itoa(maxCryptoKeys) + " key parameters"
	}
	for i, kp := range params {
		k, reason := parseKeyParam(kp, c.Suite)
		if reason != "" {
			return Crypto{}, reason
		}
		if i == 0 {
			c.Key, c.Lifetime, c.MKI, c.MKILength = k.Key, k.Lifetime, k.MKI, k.MKILength
			continue
		}
		if k.MKILength == 0 || c.MKILength == 0 {
			return Crypto{}, "crypto line with several keys needs an MKI on each (RFC 4568 section 6.1)"
		}
		c.MoreKeys = append(c.MoreKeys, k)
	}
	c.Params = append(c.Params, f[3:]...)
	return c, ""
}

// maxCryptoKeys bounds the key parameters of one crypto line.
const maxCryptoKeys = 16

// parseKeyParam parses one "inline:key[|lifetime][|mki:length]" key
// parameter of a crypto line for suite.
func parseKeyParam(kp, suite string) (CryptoKey, string) {
	inline, ok := strings.CutPrefix(kp, "inline:")
	if !ok {
		return CryptoKey{}, `crypto key parameter must start with "inline:"`
	}
	parts := strings.Split(inline, "|")
	if len(parts) > 3 {
		return CryptoKey{}, "crypto key parameter has too many fields"
	}
	var k CryptoKey
	var err error
	k.Key, err = base64.StdEncoding.DecodeString(parts[0])
	if err != nil {
		k.Key, err = base64.RawStdEncoding.DecodeString(parts[0])
	}
	if err != nil || len(k.Key) == 0 {
		return CryptoKey{}, "crypto inline key must be base64"
	}
	if want, known := suiteKeyLengths[suite]; known && len(k.Key) != want {
		return CryptoKey{}, fmt.Sprintf("crypto inline key is %d bytes, %s needs %d (master key and salt)", len(k.Key), suite, want)
	}
	rest := parts[1:]
	if len(rest) > 0 && !strings.Contains(rest[0], ":") {
		k.Lifetime, ok = parseLifetime(rest[0])
		if !ok {
			return CryptoKey{}, `crypto key lifetime must be a number or "2^n"`
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		val, length, ok := strings.Cut(rest[0], ":")
		mki, err1 := strconv.ParseUint(val, 10, 32)
		n, err2 := strconv.ParseUint(length, 10, 8)
		if !ok || err1 != nil || err2 != nil || n < 1 || n > 4 || bits.Len64(mki) > int(8*n) {
			return CryptoKey{}, "crypto MKI must be value:length with a length of 1 to 4 bytes that holds the value"
		}
		k.MKI, k.MKILength = uint32(mki), int(n)
		rest = rest[1:]
	}
	if len(rest) > 0 {
		return CryptoKey{}, "crypto key parameter must be key[|lifetime][|mki:length]"
	}
	return k, ""
}

func parseLifetime(s string) (uint64, bool) {
	if exp, ok := strings.CutPrefix(s, "2^"); ok {
		n, err := strconv.ParseUint(exp, 10, 8)
		if err != nil || n > 63 {
			return 0, false
		}
		return 1 << n, true
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// check reports what keeps c from being written as an "a=crypto" line.
func (c Crypto) check() string {
	switch {
	case c.Tag < 0 || c.Tag > maxTag:
		return "crypto tag must be from 0 to 999999999"
	case !isToken(c.Suite):
		return "crypto suite must be a token"
	case len(c.Key) == 0:
		return "crypto key is empty"
	case c.MKILength < 0 || c.MKILength > 4:
		return "crypto MKI length must be from 0 to 4"
	case c.MKILength > 0 && bits.Len32(c.MKI) > 8*c.MKILength:
		return "crypto MKI does not fit its length"
	case c.MKILength == 0 && c.MKI != 0:
		return "crypto MKI is set without an MKI length"
	}
	if want, known := suiteKeyLengths[c.Suite]; known && len(c.Key) != want {
		return fmt.Sprintf("crypto key is %d bytes, %s needs %d", len(c.Key), c.Suite, want)
	}
	if len(c.MoreKeys) > 0 && (c.MKILength == 0 || len(c.MoreKeys)+1 > maxCryptoKeys) {
		return fmt.Sprintf("crypto line with several keys needs an MKI on each and at most %d keys", maxCryptoKeys)
	}
	for _, k := range c.MoreKeys {
		if k.MKILength == 0 {
			return "crypto line with several keys needs an MKI on each"
		}
		further := Crypto{Tag: c.Tag, Suite: c.Suite, Key: k.Key, Lifetime: k.Lifetime, MKI: k.MKI, MKILength: k.MKILength}
		if reason := further.check(); reason != "" {
			return "crypto further key: " + reason
		}
	}
	for _, p := range c.Params {
		if p == "" || strings.ContainsAny(p, " \t\r\n") {
			return "crypto session parameter must be one non-empty word"
		}
	}
	return ""
}

// value returns the attribute value of an "a=crypto" line.
func (c Crypto) value() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.Tag))
	b.WriteByte(' ')
	b.WriteString(c.Suite)
	b.WriteByte(' ')
	writeKeyParam(&b, CryptoKey{Key: c.Key, Lifetime: c.Lifetime, MKI: c.MKI, MKILength: c.MKILength})
	for _, k := range c.MoreKeys {
		b.WriteByte(';')
		writeKeyParam(&b, k)
	}
	for _, p := range c.Params {
		b.WriteByte(' ')
		b.WriteString(p)
	}
	return b.String()
}

func writeKeyParam(b *strings.Builder, k CryptoKey) {
	b.WriteString("inline:")
	b.WriteString(base64.StdEncoding.EncodeToString(k.Key))
	if k.Lifetime != 0 {
		b.WriteByte('|')
		if k.Lifetime&(k.Lifetime-1) == 0 {
			b.WriteString("2^" + strconv.Itoa(bits.TrailingZeros64(k.Lifetime)))
		} else {
			b.WriteString(strconv.FormatUint(k.Lifetime, 10))
		}
	}
	if k.MKILength != 0 {
		b.WriteByte('|')
		b.WriteString(strconv.FormatUint(uint64(k.MKI), 10))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(k.MKILength))
	}
}

// clone returns a copy that shares no memory with c.
func (c Crypto) clone() Crypto {
	c.Key = append([]byte(nil), c.Key...)
	if len(c.MoreKeys) > 0 {
		more := make([]CryptoKey, len(c.MoreKeys))
		for i, k := range c.MoreKeys {
			k.Key = append([]byte(nil), k.Key...)
			more[i] = k
		}
		c.MoreKeys = more
	} else {
		c.MoreKeys = nil
	}
	c.Params = append([]string(nil), c.Params...)
	if len(c.Params) == 0 {
		c.Params = nil
	}
	return c
}
