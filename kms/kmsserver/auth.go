package kmsserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/kms/internal/wire"
)

// principal is an authenticated device.
type principal struct {
	identity string
	certKey  *ecdsa.PublicKey // the certificate's key, for mutual TLS
}

// authCache remembers verified credentials until they expire, so that a
// warm request costs a map lookup rather than a chain or signature check.
type authCache struct {
	mu sync.Mutex
	m  map[[32]byte]authEntry
}

type authEntry struct {
	p                   principal
	notBefore, notAfter time.Time
}

const maxAuthCache = 4096

func (a *authCache) init() { a.m = map[[32]byte]authEntry{} }

func (a *authCache) get(k [32]byte, now time.Time) (principal, bool) {
	a.mu.Lock()
	e, ok := a.m[k]
	a.mu.Unlock()
	if !ok || now.Before(e.notBefore) || !now.Before(e.notAfter) {
		return principal{}, false
	}
	return e.p, true
}

func (a *authCache) put(k [32]byte, e authEntry) {
	a.mu.Lock()
	if len(a.m) >= maxAuthCache {
		clear(a.m)
	}
	a.m[k] = e
	a.mu.Unlock()
}

// tokenLeeway tolerates clock skew in a token's exp and nbf.
const tokenLeeway = 5 * time.Second

// authenticate identifies the device and takes a token from its request
// bucket (429 with Retry-After when it has none).
func (s *Server) authenticate(r *http.Request) (principal, *apiError) {
	p, aerr := s.identify(r)
	if aerr != nil {
		if aerr.status == http.StatusUnauthorized {
			s.authFailures.allow(remoteHost(r), s.cfg.Clock())
		}
		return p, aerr
	}
	if ok, retry := s.requests.allow(p.identity, s.cfg.Clock()); !ok {
		return principal{}, &apiError{status: http.StatusTooManyRequests, code: wire.CodeRateLimited, retry: retry}
	}
	return p, nil
}

// authGate refuses to verify new credentials from an address whose failed
// authentications have used up its bucket ([Config].FailedAuthRate):
// verifying a certificate chain or a token signature is the work an
// unauthenticated flood would make the server do. Credentials already
// verified (in the cache) are not gated, so devices behind the same
// address (a proxy, a NAT) that authenticated before keep working.
func (s *Server) authGate(r *http.Request, now time.Time) *apiError {
	if ok, retry := s.authFailures.peek(remoteHost(r), now); !ok {
		return &apiError{status: http.StatusTooManyRequests, code: wire.CodeRateLimited, retry: retry}
	}
	return nil
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// TokenIdentityPrefix starts the identity of every device that
// authenticates with a bearer token: the token's subject "alice" is the
// identity "token:alice". Certificate identities (common names) cannot
// contain ':', so the two kinds never name the same device.
const TokenIdentityPrefix = "token:"

// identify identifies the device: a bearer token if the request has an
// Authorization header, else a client certificate.
func (s *Server) identify(r *http.Request) (principal, *apiError) {
	now := s.cfg.Clock()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || len(s.cfg.TokenKeys) == 0 || len(tok) > 8192 {
			return principal{}, fail(http.StatusUnauthorized, wire.CodeBadToken)
		}
		k := sha256.Sum256([]byte("token\x00" + tok))
		if p, ok := s.auth.get(k, now); ok {
			return p, nil
		}
		if aerr := s.authGate(r, now); aerr != nil {
			return principal{}, aerr
		}
		p, exp, aerr := s.verifyToken(tok, now)
		if aerr != nil {
			return principal{}, aerr
		}
		s.auth.put(k, authEntry{p: p, notAfter: exp})
		return p, nil
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || s.cfg.ClientCAs == nil {
		return principal{}, fail(http.StatusUnauthorized, wire.CodeUnauthenticated)
	}
	certs := r.TLS.PeerCertificates
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	if p, ok := s.auth.get(k, now); ok {
		return p, nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if aerr := s.authGate(r, now); aerr != nil {
		return principal{}, aerr
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         s.cfg.ClientCAs,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &inv) && inv.Reason == x509.Expired:
			return principal{}, fail(http.StatusUnauthorized, wire.CodeCertificateExpired)
		case errors.As(err, &ua):
			return principal{}, fail(http.StatusUnauthorized, wire.CodeUnknownAuthority)
		}
		return principal{}, fail(http.StatusUnauthorized, wire.CodeUnauthenticated)
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	cn := leaf.Subject.CommonName
	if !ok || pub.Curve != elliptic.P256() || cn == "" || len(cn) > maxIdentity || strings.ContainsAny(cn, ":") || !utf8.ValidString(cn) {
		return principal{}, fail(http.StatusUnauthorized, wire.CodeUnauthenticated)
	}
	e := authEntry{p: principal{identity: leaf.Subject.CommonName, certKey: pub}, notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for _, c := range chains[0][1:] {
		if c.NotBefore.After(e.notBefore) {
			e.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(e.notAfter) {
			e.notAfter = c.NotAfter
		}
	}
	s.auth.put(k, e)
	return e.p, nil
}

// verifyToken checks a bearer JWT's signature against the configured keys,
// then its expiry (required), not-before, audience and subject.
func (s *Server) verifyToken(raw string, now time.Time) (principal, time.Time, *apiError) {
	bad := fail(http.StatusUnauthorized, wire.CodeBadToken)
	tok, err := jwt.ParseSigned(raw, wire.AllowedTokenAlgs)
	if err != nil {
		return principal{}, time.Time{}, bad
	}
	var claims jwt.Claims
	verified := false
	for _, k := range s.cfg.TokenKeys {
		if tok.Claims(k, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified || claims.Expiry == nil || claims.Subject == "" || len(TokenIdentityPrefix+claims.Subject) > maxIdentity || !utf8.ValidString(claims.Subject) {
		return principal{}, time.Time{}, bad
	}
	exp := jwt.Expected{Time: now}
	if s.cfg.TokenAudience != "" {
		exp.AnyAudience = jwt.Audience{s.cfg.TokenAudience}
	}
	if err := claims.ValidateWithLeeway(exp, tokenLeeway); err != nil {
		if errors.Is(err, jwt.ErrExpired) {
			return principal{}, time.Time{}, fail(http.StatusUnauthorized, wire.CodeTokenExpired)
		}
		return principal{}, time.Time{}, bad
	}
	return principal{identity: TokenIdentityPrefix + claims.Subject}, claims.Expiry.Time().Add(tokenLeeway), nil
}
