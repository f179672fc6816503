package keyschedule

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// The vectors below were computed with an independent HKDF-SHA256 written in
// Python from RFC 5869 (hmac + hashlib), following the info layout in the
// package documentation, and are pinned here so that the schedule can never
// change silently: a change would make every deployed peer disagree.
func TestDeriveKnownAnswers(t *testing.T) {
	callKey := make([]byte, 32)
	for i := range callKey {
		callKey[i] = byte(i)
	}
	exporter := make([]byte, 56)
	for i := range exporter {
		exporter[i] = byte(0xa0 + i)
	}
	tests := []struct {
		name      string
		in        Input
		key, salt string
	}{
		{"kms alice v1 gcm128", Input{Mode: KMS, CallKey: callKey, CallID: "call-1", Sender: "alice", Version: 1, Profile: 7, KeyLen: 16, SaltLen: 12},
			"1e6727b561fbaf438ea2febb6fd0c72a", "4eb0fa7f451458fbdee95092"},
		{"kms bob v1 gcm128", Input{Mode: KMS, CallKey: callKey, CallID: "call-1", Sender: "bob", Version: 1, Profile: 7, KeyLen: 16, SaltLen: 12},
			"2080524b8526cd92466520fa009be15a", "c547e3e7a915ce7dd9260267"},
		{"kms alice v2 gcm128", Input{Mode: KMS, CallKey: callKey, CallID: "call-1", Sender: "alice", Version: 2, Profile: 7, KeyLen: 16, SaltLen: 12},
			"d9838578bcec7189aebe1177a602edd9", "3ffbaaa2972e8a786f8b8e81"},
		{"kms alice v1 cm80", Input{Mode: KMS, CallKey: callKey, CallID: "call-1", Sender: "alice", Version: 1, Profile: 1, KeyLen: 16, SaltLen: 14},
			"502edad27712f651f36a9d8eedd969f3", "bd6bdb5d67747fc2ff4a3832acdb"},
		{"hybrid alice v1 gcm128", Input{Mode: Hybrid, CallKey: callKey, Exporter: exporter, CallID: "call-1", Sender: "alice", Version: 1, Profile: 7, KeyLen: 16, SaltLen: 12},
			"d13373a626b96b4a526562a04bfa24ab", "6b0e6aa36fcc22123492b7c0"},
		{"kms alice v1 gcm256", Input{Mode: KMS, CallKey: callKey, CallID: "call-1", Sender: "alice", Version: 1, Profile: 8, KeyLen: 32, SaltLen: 12},
			"33eefedd1193ade6e43acb3051b50f0db1f53b6fe95e9e63dda7467df0da4076", "252566a94af34c63783cb070"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, salt, err := Derive(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(key); got != tt.key {
				t.Errorf("key = %s, want %s", got, tt.key)
			}
			if got := hex.EncodeToString(salt); got != tt.salt {
				t.Errorf("salt = %s, want %s", got, tt.salt)
			}
		})
	}
}

func TestDeriveSeparatesInputs(t *testing.T) {
	base := Input{Mode: KMS, CallKey: bytes.Repeat([]byte{7}, 32), CallID: "c", Sender: "a", Version: 3, Profile: 7, KeyLen: 16, SaltLen: 12}
	k0, s0, err := Derive(base)
	if err != nil {
		t.Fatal(err)
	}
	variants := map[string]func(*Input){
		"sender":  func(in *Input) { in.Sender = "b" },
		"version": func(in *Input) { in.Version = 4 },
		"profile": func(in *Input) { in.Profile = 8 },
		"call id": func(in *Input) { in.CallID = "d" },
		"key":     func(in *Input) { in.CallKey = bytes.Repeat([]byte{8}, 32) },
		"hybrid":  func(in *Input) { in.Mode = Hybrid; in.Exporter = []byte{1} },
		// Length-prefixing the sender keeps "ab"+version from colliding
		// with "a"+another encoding.
		"sender prefix": func(in *Input) { in.Sender = "a\x00" },
	}
	for name, mutate := range variants {
		in := base
		mutate(&in)
		k, s, err := Derive(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Equal(k, k0) || bytes.Equal(s, s0) {
			t.Errorf("changing the %s did not change the derived key and salt", name)
		}
	}
}

func TestDeriveRejectsBadInput(t *testing.T) {
	good := Input{Mode: KMS, CallKey: make([]byte, 32), CallID: "c", Sender: "a", Version: 1, Profile: 7, KeyLen: 16, SaltLen: 12}
	bad := map[string]func(*Input){
		"mode":              func(in *Input) { in.Mode = 0 },
		"short key":         func(in *Input) { in.CallKey = make([]byte, 15) },
		"hybrid no export":  func(in *Input) { in.Mode = Hybrid },
		"kms with exporter": func(in *Input) { in.Exporter = []byte{1} },
		"empty call id":     func(in *Input) { in.CallID = "" },
		"empty sender":      func(in *Input) { in.Sender = "" },
		"zero key len":      func(in *Input) { in.KeyLen = 0 },
		"zero salt len":     func(in *Input) { in.SaltLen = 0 },
	}
	for name, mutate := range bad {
		in := good
		mutate(&in)
		if _, _, err := Derive(in); err == nil {
			t.Errorf("%s: Derive accepted bad input", name)
		}
	}
}
