package ice_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/natlab"
	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/sdp"
)

// coturnLoopback runs coturn on 127.0.0.1 for one test.
type coturnLoopback struct {
	port, tlsPort int
	roots         *x509.CertPool
	c             *natlab.Coturn
}

func startCoturn(t *testing.T, withTLS bool, secret string) *coturnLoopback {
	t.Helper()
	requireInterop(t, natlab.CoturnAvailable())
	dir := t.TempDir()
	port, err := natlab.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	relayPort, err := natlab.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := natlab.CoturnConfig{
		ListenIP: "127.0.0.1", RelayIP: "127.0.0.1", Port: port,
		MinPort: relayPort, MaxPort: relayPort + 20,
		User: "alice", Password: "correct-horse", Secret: secret,
		AllowLoopbackPeers: true, Dir: dir,
	}
	ct := &coturnLoopback{port: port}
	if withTLS {
		if ct.tlsPort, err = natlab.FreePort("127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		cfg.TLSPort = ct.tlsPort
		cfg.CertFile, cfg.KeyFile, ct.roots = selfSigned(t, dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ct.c, err = natlab.StartCoturn(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ct.c.Close()
		if t.Failed() {
			t.Logf("coturn log:\n%s", ct.c.Log())
		}
	})
	return ct
}

// selfSigned writes a certificate for 127.0.0.1 from a new test CA and its
// key, and returns their paths and a pool that trusts the CA.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	ca, err := testpki.NewCA("securecall test TURN CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server(testpki.Validity{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := testpki.WriteFiles(cert, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, ca.Pool()
}

// relayCall connects a RelayOnly side through server with a loopback
// host-only peer, exchanges data and checks the path.
func relayCall(t *testing.T, server ice.Server, tlsConfig *tls.Config) {
	t.Helper()
	cfg := loopback()
	cfg.Policy = ice.RelayOnly
	cfg.Servers = []ice.Server{server}
	cfg.TLSConfig = tlsConfig
	a, b := newSide(t, cfg), newSide(t, loopback())
	connect(t, a, b, false, false, nil)
	exchange(t, a.conn, b.conn)
	p := a.t.Path()
	if p.Local.Type != sdp.CandidateRelay || p.Relay != server.URL {
		t.Errorf("path = %+v, want a relay through %s", p, server.URL)
	}
	t.Logf("relayed through %s: %s -> %s, RTT %v", p.Relay, p.Local.Address, p.Remote.Address, p.RTT)
}

func TestCoturnTCP(t *testing.T) {
	ct := startCoturn(t, false, "")
	relayCall(t, ice.Server{URL: fmt.Sprintf("turn:127.0.0.1:%d?transport=tcp", ct.port), Username: "alice", Credential: "correct-horse"}, nil)
}

func TestCoturnTLS(t *testing.T) {
	ct := startCoturn(t, true, "")
	url := fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", ct.tlsPort)
	relayCall(t, ice.Server{URL: url, Username: "alice", Credential: "correct-horse"}, &tls.Config{RootCAs: ct.roots, MinVersion: tls.VersionTLS12})

	// Without the test root the server is not trusted, and a RelayOnly
	// transport says so.
	cfg := loopback()
	cfg.Policy = ice.RelayOnly
	cfg.Servers = []ice.Server{{URL: url, Username: "alice", Credential: "correct-horse"}}
	s := newSide(t, cfg)
	err := s.t.Gather(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Gather against an untrusted server = %v, want a certificate error", err)
	}
}

func TestCoturnRESTCredentials(t *testing.T) {
	const secret = "shared-rest-secret"
	ct := startCoturn(t, false, secret)
	user, cred := ice.RESTCredentials(secret, "alice", time.Now().Add(time.Hour))
	if !strings.HasSuffix(user, ":alice") {
		t.Errorf("REST username %q", user)
	}
	url := fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", ct.port)
	relayCall(t, ice.Server{URL: url, Username: user, Credential: cred}, nil)

	for _, c := range []struct {
		name       string
		user, cred string
	}{
		{"wrong secret", user, func() string {
			_, c := ice.RESTCredentials("not-the-secret", "alice", time.Now().Add(time.Hour))
			return c
		}()},
		{"expired", func() string { u, _ := ice.RESTCredentials(secret, "alice", time.Now().Add(-time.Hour)); return u }(),
			func() string { _, c := ice.RESTCredentials(secret, "alice", time.Now().Add(-time.Hour)); return c }()},
	} {
		cfg := loopback()
		cfg.Policy = ice.RelayOnly
		cfg.Servers = []ice.Server{{URL: url, Username: c.user, Credential: c.cred}}
		s := newSide(t, cfg)
		err := s.t.Gather(context.Background(), nil)
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%s: Gather = %v, want an error that names the 401 refusal", c.name, err)
		} else if strings.Contains(err.Error(), c.cred) {
			t.Errorf("%s: error reveals the credential", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}
