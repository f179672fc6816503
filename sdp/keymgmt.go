package sdp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"unicode/utf8"
)

// KeyRef is the reference to the call key held by the customer's KMS, as
// carried in this SDK's "a=key-mgmt" attribute. It names a key; it never
// holds one, so it is safe to print and to send over any signaling path.
type KeyRef struct {
	// URI is the key resource at the KMS, such as
	// "https://kms.example.com/v1/calls/42/key".
	URI string
	// Version is the key version the sender uses, 0 when it leaves the
	// choice to the KMS (the version in force when the peer fetches).
	Version uint32
}

// KeyMgmtProtocol is the protocol identifier of this SDK's "a=key-mgmt"
// attribute (RFC 4567 prtcl-id). The format is described in the package
// documentation.
const KeyMgmtProtocol = "securecall"

// maxKeyURI bounds the key URI so that a key-mgmt line stays small.
const maxKeyURI = 2048

// keyRefJSON is the wire form of a KeyRef inside the key-mgmt data.
type keyRefJSON struct {
	URI     string `json:"uri"`
	Version uint32 `json:"version"`
}

// checkKeyURI reports what is wrong with a key URI, or "".
func checkKeyURI(uri string) string {
	if uri == "" || len(uri) > maxKeyURI || !utf8.ValidString(uri) {
		return "key-mgmt URI must be 1 to 2048 bytes of UTF-8"
	}
	for _, r := range uri {
		if r <= ' ' || r == 0x7f {
			return "key-mgmt URI must not contain spaces or control characters"
		}
	}
	if u, err := url.Parse(uri); err != nil || u.Scheme == "" {
		return "key-mgmt URI must be an absolute URI"
	}
	return ""
}

// parseKeyMgmt parses an "a=key-mgmt" value. It returns the KeyRef, or a
// reason the value is not this SDK's key-mgmt attribute.
func parseKeyMgmt(v string) (*KeyRef, string) {
	id, data, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return nil, "key-mgmt must be a protocol id, a space and base64 data"
	}
	if id != KeyMgmtProtocol {
		return nil, "key-mgmt protocol " + quoteText(id) + " is not supported, only " + KeyMgmtProtocol
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(data))
	if err != nil {
		return nil, "key-mgmt data must be base64"
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var j keyRefJSON
	if err := dec.Decode(&j); err != nil {
		return nil, `key-mgmt data must be a JSON object with only "uri" and "version"`
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, `key-mgmt data must be a JSON object with only "uri" and "version"`
	}
	if reason := checkKeyURI(j.URI); reason != "" {
		return nil, reason
	}
	return &KeyRef{URI: j.URI, Version: j.Version}, ""
}

// value returns the "a=key-mgmt" attribute value for r.
func (r KeyRef) value() string {
	// Encoding a string and an integer cannot fail.
	raw, _ := json.Marshal(keyRefJSON(r))
	return KeyMgmtProtocol + " " + base64.StdEncoding.EncodeToString(raw)
}
