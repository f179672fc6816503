package securecall_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/media"
)

// inspectionProxy is a TLS-terminating hop in front of the real KMS, with
// its own CA that the devices trust (as a corporate inspection proxy is
// trusted). It passes each device's certificate on to the KMS, as a
// terminating load balancer does, learns every device key from the
// registrations it forwards, and re-wraps every delivered key to the
// device's key with the binding headers copied: the attacker's key, bare
// or signed by the attacker's own key.
type inspectionProxy struct {
	t      *testing.T
	kms    http.Handler
	sign   bool // sign the forged key with the attacker's key
	signer *ecdsa.PrivateKey

	mu      sync.Mutex
	devices map[string]*ecdsa.PublicKey // by certificate common name
	forged  atomic.Int32
}

func (p *inspectionProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var who string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		who = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if r.Method == http.MethodPost && r.URL.Path == "/v1/devices" {
		var reg struct {
			Key jose.JSONWebKey `json:"key"`
		}
		if json.Unmarshal(body, &reg) == nil {
			if pub, ok := reg.Key.Key.(*ecdsa.PublicKey); ok {
				p.mu.Lock()
				p.devices[who] = pub
				p.mu.Unlock()
			}
		}
	}
	rec := httptest.NewRecorder()
	p.kms.ServeHTTP(rec, r)
	out := rec.Body.Bytes()
	p.mu.Lock()
	dev := p.devices[who]
	p.mu.Unlock()
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/keys") && rec.Code == http.StatusOK && dev != nil {
		out = p.rewrap(out, dev)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(out)
}

func (p *inspectionProxy) rewrap(body []byte, dev *ecdsa.PublicKey) []byte {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		p.t.Error(err)
		return body
	}
	tp, _ := (&jose.JSONWebKey{Key: dev}).Thumbprint(crypto.SHA256)
	devKid := base64.RawURLEncoding.EncodeToString(tp)
	for _, k := range m["keys"].([]any) {
		k := k.(map[string]any)
		head, _, _ := strings.Cut(k["jwe"].(string), ".")
		raw, _ := base64.RawURLEncoding.DecodeString(head)
		var h map[string]any
		json.Unmarshal(raw, &h)
		attackerKey := bytes.Repeat([]byte{0xa5}, media.CallKeySize)
		payload := attackerKey
		if p.sign {
			claims, _ := json.Marshal(map[string]any{"uri": h["sc-uri"], "call": h["sc-call"], "ver": h["sc-ver"],
				"act": h["sc-act"], "exp": h["sc-exp"], "rcpt": devKid, "key": attackerKey})
			tp, _ := (&jose.JSONWebKey{Key: &p.signer.PublicKey}).Thumbprint(crypto.SHA256)
			s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p.signer, KeyID: base64.RawURLEncoding.EncodeToString(tp)}},
				(&jose.SignerOptions{}).WithType("securecall-key+jws"))
			jws, _ := s.Sign(claims)
			c, _ := jws.CompactSerialize()
			payload = []byte(c)
		}
		opts := &jose.EncrypterOptions{}
		for _, name := range []string{"cty", "sc-uri", "sc-call", "sc-ver", "sc-act", "sc-exp"} {
			if v, ok := h[name]; ok {
				opts.WithHeader(jose.HeaderKey(name), v)
			}
		}
		enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: dev, KeyID: devKid}, opts)
		if err != nil {
			p.t.Error(err)
			return body
		}
		obj, _ := enc.Encrypt(payload)
		k["jwe"], _ = obj.CompactSerialize()
		p.forged.Add(1)
	}
	out, _ := json.Marshal(m)
	return out
}

// A TLS-terminating hop between the devices and the KMS re-wraps every
// delivery to the device key it saw at registration. The devices pin the
// KMS's signing keys, so they refuse every forged delivery (bare, or
// signed by the hop's own key) and the call does not connect.
func TestSecurityForgedDelivery(t *testing.T) {
	env := kmsEnv(t, "alice", "bob")
	proxyCA, err := testpki.NewCA("inspection proxy CA")
	if err != nil {
		t.Fatal(err)
	}
	proxyCert, err := proxyCA.Server(testpki.Validity{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name string
		sign bool
		want error
	}{
		{"bare attacker key", false, kms.ErrUnsigned},
		{"attacker key signed by the hop", true, kms.ErrSigner},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := &inspectionProxy{t: t, kms: env.Server, sign: tc.sign, signer: attacker, devices: map[string]*ecdsa.PublicKey{}}
			srv := httptest.NewUnstartedServer(proxy)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{proxyCert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
			srv.StartTLS()
			defer srv.Close()
			client := func(id string) *kms.Client {
				cfg, err := env.ClientConfig(id)
				if err != nil {
					t.Fatal(err)
				}
				cfg.URL, cfg.RootCAs = srv.URL, proxyCA.Pool()
				c, err := kms.NewClient(cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if err := c.Register(context.Background()); err != nil {
					t.Fatal(err)
				}
				return c
			}
			alice, bob := client("alice"), client("bob")
			ctx := context.Background()
			uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
			if err != nil {
				t.Fatal(err)
			}
			if keys, err := alice.Fetch(ctx, uri); !errors.Is(err, tc.want) {
				t.Fatalf("alice accepted %v through the hop (err %v), want %v", keys, err, tc.want)
			}
			if keys, err := bob.FetchVersion(ctx, uri, 1); !errors.Is(err, tc.want) {
				t.Fatalf("bob accepted %v through the hop (err %v), want %v", keys, err, tc.want)
			}

			a, err := securecall.New(securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := securecall.New(securecall.Config{ICE: loopbackICE(), KeySource: bob})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			offer, err := a.Offer(cctx)
			if err != nil {
				t.Fatal(err)
			}
			answer, err := b.Answer(cctx, offer)
			var de *kms.DeliveryError
			if !errors.Is(err, tc.want) || !errors.As(err, &de) {
				t.Fatalf("Answer with forged deliveries: %v, want %v", err, tc.want)
			}
			if answer != "" || b.State() == securecall.StateConnected || a.State() == securecall.StateConnected {
				t.Fatalf("a call connected on forged keys: caller %s, callee %s", a.State(), b.State())
			}
			if proxy.forged.Load() < 3 {
				t.Fatalf("the hop forged %d deliveries", proxy.forged.Load())
			}
		})
	}
}

// A direct client of the same KMS (no hop) gets genuine deliveries: the
// refusals above come from the hop, not from the set-up.
func TestSecurityForgedDeliveryControl(t *testing.T) {
	env := kmsEnv(t, "alice", "bob")
	alice := kmsClient(t, env, "alice")
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pair(t,
		securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri},
		securecall.Config{ICE: loopbackICE(), KeySource: kmsClient(t, env, "bob")})
	sendRecv(t, a, b, 5)
}

// An operator compromises the version a live Call sends with: both Calls
// move to the replacement the KMS makes, within a KMS round trip and
// before its activation time, and media keeps flowing. The Call hands its
// kms.Client to the media session as it is, so the session watches
// withdrawals (media.KeyChangeWatcher); media's
// TestCompromisedVersionLeavesLiveCall shows the forged packets refused.
func TestSecurityCompromisedVersionLeavesCall(t *testing.T) {
	env, err := devkms.StartWith(context.Background(), t.TempDir(),
		devkms.Options{Server: kmsserver.Config{ActivationDelay: time.Hour}}, "alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	alice, err := env.Client("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := env.Client("bob")
	if err != nil {
		t.Fatal(err)
	}
	uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	a, b := pair(t,
		securecall.Config{ICE: loopbackICE(), KeySource: alice, KeyURI: uri},
		securecall.Config{ICE: loopbackICE(), KeySource: bob})
	sendRecv(t, a, b, 5)
	if va, vb := a.Stats().SendKeyVersion, b.Stats().SendKeyVersion; va != 1 || vb != 1 {
		t.Fatalf("sending under versions %d and %d, want 1", va, vb)
	}
	if err := env.Server.SetKeyState(context.Background(), uri[strings.LastIndexByte(uri, '/')+1:], 1, kmsserver.StateCompromised); err != nil {
		t.Fatal(err)
	}
	// The replacement activates in an hour: only the withdrawal moves the
	// Calls to it now.
	waitFor(t, 10*time.Second, func() bool { return a.Stats().SendKeyVersion == 2 && b.Stats().SendKeyVersion == 2 })
	sendRecv(t, a, b, 5)
	sendRecv(t, b, a, 5)
}
