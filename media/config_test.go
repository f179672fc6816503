package media

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/cfgcheck"
	"github.com/securecall/securecall/sdp"
)

// TestDocumentedDefaults checks every "defaults to" in config.go against the
// constant it names, and that resolve applies it.
func TestDocumentedDefaults(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	for _, w := range strings.Fields(string(src)) {
		if w != "//" {
			words = append(words, w)
		}
	}
	doc := strings.Join(words, " ")
	for _, want := range []string{
		"defaults to DefaultRotationGrace (5 s)",
		"defaults to DefaultMaxPackets (2^30)",
		"defaults to DefaultHandshakeTimeout (15 s)",
		"defaults to retransmitting after DefaultRetransmitInterval (1 s)",
		"bounded to MinRetransmitInterval (100 ms) and DefaultRetransmitInterval (1 s)",
		"defaults to DefaultProfiles (AEAD_AES_128_GCM, then AES_CM_128_HMAC_SHA1_80)",
		"defaults to sdp.KeyingHybrid when KeySource is set, else sdp.KeyingDTLS",
		"Tests set it to the same fake clock as the KMS's. If nil, defaults to time.Now.",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("config.go does not say %q", want)
		}
	}
	if DefaultRotationGrace != 5*time.Second || DefaultMaxPackets != 1<<30 || DefaultHandshakeTimeout != 15*time.Second ||
		DefaultRetransmitInterval != time.Second || MinRetransmitInterval != 100*time.Millisecond {
		t.Error("a default constant disagrees with its documentation")
	}
	if len(DefaultProfiles) != 2 || DefaultProfiles[0] != ProfileAEADAES128GCM || DefaultProfiles[1] != ProfileAES128CMHMACSHA1_80 {
		t.Errorf("DefaultProfiles = %v", DefaultProfiles)
	}

	a, _ := pairConfigs(t, sdp.KeyingDTLS, nil)
	got, err := a.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.RotationGrace != DefaultRotationGrace || got.MaxPackets != DefaultMaxPackets ||
		got.HandshakeTimeout != DefaultHandshakeTimeout || len(got.Profiles) != 2 || got.Profiles[0] != ProfileAEADAES128GCM ||
		got.KeyLifetime != 0 {
		t.Errorf("resolved defaults %+v", got)
	}
	if got.Clock == nil || reflect.ValueOf(got.Clock).Pointer() != reflect.ValueOf(time.Now).Pointer() {
		t.Error("a nil Clock did not resolve to time.Now")
	}
	a.Keying = ""
	if got, _ := a.resolve(); got.Keying != sdp.KeyingDTLS {
		t.Errorf("zero Keying without KeySource resolved to %q", got.Keying)
	}
	k, _ := pairConfigs(t, sdp.KeyingHybrid, newFakeKeys(t, 1))
	k.Keying = ""
	if got, _ := k.resolve(); got.Keying != sdp.KeyingHybrid {
		t.Errorf("zero Keying with KeySource resolved to %q", got.Keying)
	}
}

// TestNewSessionDoesNotModifyConfig compares each side's Config after a
// whole session with a deep snapshot taken before, in every keying mode,
// so that a changed slice element (a profile, a fingerprint byte, a key
// byte) is seen, not only a replaced field.
func TestNewSessionDoesNotModifyConfig(t *testing.T) {
	for _, mode := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid, sdp.KeyingSDES} {
		t.Run(string(mode), func(t *testing.T) {
			a, b := pairConfigs(t, mode, newFakeKeys(t, 1))
			a.Profiles = []Profile{ProfileAEADAES128GCM, ProfileAES128CMHMACSHA1_80}
			b.Profiles = []Profile{ProfileAEADAES128GCM, ProfileAES128CMHMACSHA1_80}
			beforeA, beforeB := cfgcheck.Snapshot(a), cfgcheck.Snapshot(b)
			ca, cb := memPair()
			sa, sb := mustPair(t, ca, cb, a, b)
			exchange(t, sa, sb, 1, 1)
			sa.Close()
			sb.Close()
			if d := cfgcheck.Diff(beforeA, a); d != "" {
				t.Errorf("NewSession changed the client's Config: %s", d)
			}
			if d := cfgcheck.Diff(beforeB, b); d != "" {
				t.Errorf("NewSession changed the server's Config: %s", d)
			}
		})
	}
}

func TestResolveDoesNotMutate(t *testing.T) {
	a, _ := pairConfigs(t, sdp.KeyingSDES, nil)
	key := append([]byte(nil), a.SDES.LocalKey...)
	got, err := a.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if a.Profiles != nil || a.RotationGrace != 0 {
		t.Error("resolve changed the caller's Config")
	}
	got.SDES.LocalKey[0] ^= 1
	if a.SDES.LocalKey[0] != key[0] {
		t.Error("resolved Config shares key storage with the caller's")
	}
}

func TestBadConfig(t *testing.T) {
	keys := newFakeKeys(t, 1)
	dtlsCfg, _ := pairConfigs(t, sdp.KeyingDTLS, nil)
	kmsCfg, _ := pairConfigs(t, sdp.KeyingKMS, keys)
	sdesCfg, _ := pairConfigs(t, sdp.KeyingSDES, nil)
	tests := map[string]struct {
		base   Config
		mutate func(*Config)
		want   string
	}{
		"unknown keying":  {dtlsCfg, func(c *Config) { c.Keying = "zrtp" }, "unknown keying"},
		"bad profile":     {dtlsCfg, func(c *Config) { c.Profiles = []Profile{0x0005} }, "unsupported protection profile"},
		"no role":         {dtlsCfg, func(c *Config) { c.DTLSRole = 0 }, "DTLSRole"},
		"no fingerprints": {dtlsCfg, func(c *Config) { c.RemoteFingerprints = nil }, "RemoteFingerprints"},
		"bad fingerprint": {dtlsCfg, func(c *Config) { c.RemoteFingerprints = []sdp.Fingerprint{{Algorithm: "md5", Value: make([]byte, 16)}} }, "md5"},
		"short fingerprint": {dtlsCfg, func(c *Config) {
			c.RemoteFingerprints = []sdp.Fingerprint{{Algorithm: "sha-256", Value: make([]byte, 20)}}
		}, "sha-256 fingerprint has 20 bytes"},
		"no key source":     {kmsCfg, func(c *Config) { c.KeySource = nil }, "needs a KeySource"},
		"no key uri":        {kmsCfg, func(c *Config) { c.KeyURI = "" }, "needs a KeyURI"},
		"no local id":       {kmsCfg, func(c *Config) { c.LocalID = "" }, "LocalID and RemoteID"},
		"same ids":          {kmsCfg, func(c *Config) { c.RemoteID = c.LocalID }, "must differ"},
		"negative grace":    {kmsCfg, func(c *Config) { c.RotationGrace = -1 }, "negative RotationGrace"},
		"negative lifetime": {kmsCfg, func(c *Config) { c.KeyLifetime = -1 }, "negative KeyLifetime"},
		"negative rtt":      {dtlsCfg, func(c *Config) { c.HandshakeRTT = -1 }, "negative HandshakeRTT"},
		"sdes no profile":   {sdesCfg, func(c *Config) { c.SDES.Profile = 0 }, "SDES.Profile"},
		"sdes short key":    {sdesCfg, func(c *Config) { c.SDES.LocalKey = c.SDES.LocalKey[:16] }, "must have 28 bytes"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := tt.base
			tt.mutate(&c)
			ca, cb := net.Pipe()
			defer cb.Close()
			s, err := NewSession(context.Background(), ca, c)
			if s != nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewSession: %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
			// Nothing started: the conn is untouched and still works.
			go ca.Write([]byte("ok"))
			buf := make([]byte, 2)
			if _, err := cb.Read(buf); err != nil {
				t.Fatalf("conn unusable after a config error: %v", err)
			}
			ca.Close()
		})
	}
	if _, err := NewSession(context.Background(), nil, kmsCfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("nil conn: %v", err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	d := SDES{Profile: ProfileAEADAES128GCM, LocalKey: []byte("0123456789abcdef0123456789ab"), RemoteKey: []byte("ZYXWVUTSRQPONMLKJIHGFEDCBAzz")}
	for _, s := range []string{d.String(), d.GoString(), d.LogValue().String()} {
		if strings.Contains(s, "0123456789") || strings.Contains(s, "ZYXWVU") || strings.Contains(s, "3031") {
			t.Errorf("key shown in %q", s)
		}
	}
}

func TestProfileNames(t *testing.T) {
	for _, p := range []Profile{ProfileAES128CMHMACSHA1_80, ProfileAES128CMHMACSHA1_32, ProfileAEADAES128GCM, ProfileAEADAES256GCM} {
		got, ok := ProfileFromSuite(p.String())
		if !ok || got != p {
			t.Errorf("ProfileFromSuite(%q) = %v, %v", p.String(), got, ok)
		}
	}
	if p, ok := ProfileFromSuite("SRTP_AES128_CM_HMAC_SHA1_32"); !ok || p != ProfileAES128CMHMACSHA1_32 {
		t.Errorf("ffmpeg spelling: %v %v", p, ok)
	}
	if _, ok := ProfileFromSuite("F8_128_HMAC_SHA1_80"); ok {
		t.Error("unsupported suite accepted")
	}
	if s := Profile(0x42).String(); s != "Profile(0x42)" {
		t.Errorf("unknown profile prints %q", s)
	}
}
