// Package devkms runs the reference KMS (package kms/kmsserver) for development: a dev CA, a server
// certificate for 127.0.0.1, device certificates, a file store and the
// server itself over TLS on a loopback port. Tests, examples/call and
// examples/kms-server use it. Nothing here is fit for production: the CA
// key and the KEK sit in plain files in the directory.
package devkms

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/securecall/securecall/internal/testpki"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// Files in an Env's directory.
const (
	StoreFile = "kms.db"
	KEKFile   = "kek.hex"
	// KMSKeysFile holds the server's signing public keys (a JWK Set, see
	// kms.ParseKMSKeys), rewritten at every start: devices pin them.
	KMSKeysFile = "kms-keys.jwks"
)

// DevRequestRate is the per-device request rate (per second; the burst is
// twice it) of a development KMS whose Options leave the request bucket
// zero: far above the server's default, because tests and benchmarks set
// up calls from one device as fast as they can.
const DevRequestRate = 10_000

// Options tune Start; the zero value is what Start uses.
type Options struct {
	// Addr is the listen address. If empty, "127.0.0.1:0".
	Addr string
	// Server overrides fields of the server's configuration; Store, KEK
	// and ClientCAs are always set by Start, and a zero request bucket is
	// DevRequestRate.
	Server kmsserver.Config
	// Logger for the server. If nil, silent.
	Logger *slog.Logger
	// Store, if set, is used instead of the file store in the directory
	// (for example a PostgreSQL store shared by replicas); the caller
	// closes it after the Env.
	Store kmsserver.Store
}

// Env is a running development KMS.
type Env struct {
	// URL is the KMS base URL, https://127.0.0.1:port.
	URL string
	// Dir holds the CA, certificates, KEK and store.
	Dir string
	// Server is the running reference server.
	Server *kmsserver.Server
	// Store is the server's file store; nil with Options.Store.
	Store *kmsserver.FileStore
	// CA is the development CA that issued the server's and devices'
	// certificates.
	CA *testpki.CA

	httpSrv *http.Server
	ln      net.Listener
	serveWG sync.WaitGroup

	mu      sync.Mutex
	clients []*kms.Client
	closed  bool
}

// Start creates (or reuses, in dir) the dev PKI, a device certificate per
// identity, the KEK and the store, and serves the KMS on loopback.
func Start(ctx context.Context, dir string, identities ...string) (*Env, error) {
	return StartWith(ctx, dir, Options{}, identities...)
}

// StartWith is Start with options.
func StartWith(ctx context.Context, dir string, opts Options, identities ...string) (env *Env, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devkms: %w", err)
	}
	ca, err := testpki.LoadOrCreateCA(dir, "securecall development CA")
	if err != nil {
		return nil, fmt.Errorf("devkms: CA: %w", err)
	}
	serverCert, err := loadOrIssue(dir, "server", func() (tls.Certificate, error) {
		return ca.Server(testpki.Validity{}, "127.0.0.1", "localhost")
	})
	if err != nil {
		return nil, err
	}
	for _, id := range identities {
		if _, err := DeviceCertificate(ca, dir, id); err != nil {
			return nil, err
		}
	}
	kek, err := loadOrCreateKEK(filepath.Join(dir, KEKFile))
	if err != nil {
		return nil, err
	}
	var store *kmsserver.FileStore
	var backing kmsserver.Store = opts.Store
	if backing == nil {
		if store, err = kmsserver.OpenFileStore(filepath.Join(dir, StoreFile)); err != nil {
			return nil, err
		}
		backing = store
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		closeStore(store)
		return nil, fmt.Errorf("devkms: %w", err)
	}
	self := "https://" + ln.Addr().String()
	scfg := opts.Server
	scfg.Store, scfg.KEK, scfg.ClientCAs = backing, kek, ca.Pool()
	if scfg.BaseURL != "" && scfg.BaseURL != self {
		// A replica named by another's address is reached at its own too
		// (devices list every replica): proofs may name either.
		scfg.Aliases = append(slices.Clone(scfg.Aliases), self)
	}
	if scfg.RequestRate == 0 && scfg.RequestBurst == 0 {
		// Tests and benchmarks set up calls from one device as fast as
		// they can; every other limit stays the server's default.
		scfg.RequestRate, scfg.RequestBurst = DevRequestRate, 2*DevRequestRate
	}
	if scfg.Logger == nil {
		scfg.Logger = opts.Logger
	}
	srv, err := kmsserver.New(scfg)
	if err != nil {
		ln.Close()
		closeStore(store)
		return nil, err
	}
	jwks, err := srv.SigningKeysJWKS()
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, KMSKeysFile), jwks, 0o644)
	}
	if err != nil {
		ln.Close()
		srv.Close()
		closeStore(store)
		return nil, fmt.Errorf("devkms: signing keys: %w", err)
	}
	env = &Env{
		URL:     self,
		Dir:     dir,
		Server:  srv,
		Store:   store,
		CA:      ca,
		ln:      srv.LimitListener(ln),
		httpSrv: srv.HTTPServer(serverCert),
	}
	// The server's own timeouts; its TLS and HTTP errors (scanners, idle
	// connections cut) are not logged.
	env.httpSrv.ErrorLog = log.New(io.Discard, "", 0)
	env.httpSrv.SetKeepAlivesEnabled(true)
	env.serveWG.Add(1)
	go func() {
		defer env.serveWG.Done()
		_ = env.httpSrv.ServeTLS(env.ln, "", "")
	}()
	return env, nil
}

func loadOrIssue(dir, name string, issue func() (tls.Certificate, error)) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if _, err := os.Stat(certPath); err == nil {
		return testpki.LoadFiles(certPath, keyPath)
	}
	c, err := issue()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("devkms: issue %s: %w", name, err)
	}
	if err := testpki.WriteFiles(c, certPath, keyPath); err != nil {
		return tls.Certificate{}, fmt.Errorf("devkms: %w", err)
	}
	return c, nil
}

// DeviceCertificate returns the certificate of identity in dir, issuing
// and saving it (as device-<identity>.pem and device-<identity>-key.pem)
// if there is none.
func DeviceCertificate(ca *testpki.CA, dir, identity string) (tls.Certificate, error) {
	if identity == "" || strings.ContainsAny(identity, `/\`) || strings.HasPrefix(identity, ".") {
		return tls.Certificate{}, fmt.Errorf("devkms: bad identity %q", identity)
	}
	return loadOrIssue(dir, "device-"+identity, func() (tls.Certificate, error) {
		return ca.Device(testpki.Validity{}, identity)
	})
}

// DevicePaths returns the certificate and key file paths of identity.
func DevicePaths(dir, identity string) (cert, key string) {
	return filepath.Join(dir, "device-"+identity+".pem"), filepath.Join(dir, "device-"+identity+"-key.pem")
}

func loadOrCreateKEK(path string) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("devkms: %s is not a 32-byte hex key", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("devkms: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("devkms: %w", err)
	}
	return k, nil
}

// RootCAs returns a pool holding the dev CA, for clients.
func (e *Env) RootCAs() *x509.CertPool { return e.CA.Pool() }

// ClientConfig returns a client configuration for identity (issuing its
// certificate if needed).
func (e *Env) ClientConfig(identity string) (kms.Config, error) {
	cert, err := DeviceCertificate(e.CA, e.Dir, identity)
	if err != nil {
		return kms.Config{}, err
	}
	return kms.Config{URL: e.URL, Certificate: cert, RootCAs: e.RootCAs(), KMSKeys: e.Server.SigningKeys()}, nil
}

// Client returns a registered client for identity, closed by Env.Close.
func (e *Env) Client(identity string) (*kms.Client, error) {
	cfg, err := e.ClientConfig(identity)
	if err != nil {
		return nil, err
	}
	c, err := kms.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Register(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("devkms: register %s: %w", identity, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		c.Close()
		return nil, errors.New("devkms: closed")
	}
	e.clients = append(e.clients, c)
	return c, nil
}

// Close closes the clients Env made, stops serving (ending long-polls),
// closes the server and the store, and waits for all of it.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("devkms: %w", net.ErrClosed)
	}
	e.closed = true
	clients := e.clients
	e.mu.Unlock()
	for _, c := range clients {
		c.Close()
	}
	// Close the server first so that long-polls return, then shut HTTP
	// down.
	err := e.Server.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := e.httpSrv.Shutdown(ctx); serr != nil {
		e.httpSrv.Close()
	}
	e.serveWG.Wait()
	return errors.Join(err, closeStore(e.Store))
}

func closeStore(s *kmsserver.FileStore) error {
	if s == nil {
		return nil
	}
	return s.Close()
}
