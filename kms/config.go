package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"
)

// Client defaults, used when the matching [Config] field is zero.
const (
	// DefaultInitialBackoff is the first wait after a failed request.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the wait between retries.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultRequestTimeout bounds one request (a long-poll gets its wait
	// on top).
	DefaultRequestTimeout = 10 * time.Second
	// DefaultWatchWait is how long a long-poll asks the KMS to hold.
	DefaultWatchWait = 25 * time.Second
	// DefaultMaxCachedCalls bounds the calls whose keys the client keeps;
	// the least recently fetched one is forgotten first.
	DefaultMaxCachedCalls = 1024
)

// Config configures a [Client]. URL and a credential (Certificate, or
// Token/TokenSource with DeviceKey) are required; every other field's zero
// value is valid.
type Config struct {
	// URL is the KMS base URL, for example "https://kms.example.com". It
	// must be https. The client only ever sends credentials to it: key URIs
	// under another base are refused.
	URL string
	// URLs are more addresses of the same KMS (replicas on one database,
	// see kmsserver's Deployment section), https like URL. Requests go to
	// the address that answered last and fail over, in order, to the next
	// on a connection error or a 5xx; never to any host but these and
	// URL's. Key URIs under any of them are accepted. Optional.
	URLs []string
	// Certificate is the device identity for mutual TLS. Its private key
	// must be a P-256 ECDSA key; it is also the device key that delivered
	// keys are wrapped to. If empty, Token or TokenSource is required.
	Certificate tls.Certificate
	// Token is a bearer JWT whose subject is the device identity. If
	// empty, TokenSource or Certificate is used.
	Token string
	// TokenSource, if set, is called for a token before every request
	// (so it can refresh one); it takes precedence over Token.
	TokenSource func(ctx context.Context) (string, error)
	// DeviceKey is the P-256 key delivered keys are wrapped to and proofs
	// are signed with. If nil, the Certificate's key.
	DeviceKey *ecdsa.PrivateKey
	// KMSKeys are the KMS's delivery-signing public keys (P-256 ECDSA),
	// as its operator publishes them (the reference server's
	// SigningKeysJWKS, read with [ParseKMSKeys]). Required: the
	// client accepts a delivered key only if one of them signed it, so that
	// nothing between the device and the KMS (a TLS-terminating proxy, a
	// load balancer) can hand the device a key of its own. Pin the
	// current and the next key; a KMS signs with one at a time.
	KMSKeys []crypto.PublicKey
	// RootCAs verifies the KMS's certificate. If nil, the system roots.
	RootCAs *x509.CertPool
	// HTTPClient, if set, carries every request; its transport must then
	// present the Certificate itself. The client uses a copy whose
	// CheckRedirect refuses every redirect. If nil, the client builds one
	// (TLS 1.3, keep-alive, no proxy, no redirects) and closes its idle
	// connections in Close.
	HTTPClient *http.Client
	// Backoff paces retries after failures.
	Backoff Backoff
	// RequestTimeout bounds one request. If zero, defaults to
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// WatchWait is the long-poll duration Watch asks for. If zero,
	// defaults to DefaultWatchWait.
	WatchWait time.Duration
	// MaxCachedCalls bounds how many calls' keys the client caches (for
	// serving while the KMS is unreachable and for skipping repeated key
	// agreements). Entries also go when a call ends ([Client.EndCall], or
	// a fetch or watch that sees [ErrEnded] or another permanent error)
	// and on [Client.Release]. If zero, defaults to DefaultMaxCachedCalls.
	MaxCachedCalls int
	// Clock returns the time the client judges keys by (a cached version
	// is served until its ExpiresAt) and dates its proofs of freshness
	// with. If nil, time.Now. Retry waits (Backoff, Retry-After) and
	// request timeouts always use real time.
	Clock func() time.Time
	// Logger receives operational events (retries, serving cached keys);
	// never keys or tokens. If nil, the client is silent.
	Logger *slog.Logger
}

// Backoff is an exponential backoff with full jitter: the n-th wait is
// uniform in [0, min(Max, Initial·2ⁿ)).
type Backoff struct {
	// Initial is the first ceiling. If zero, defaults to
	// DefaultInitialBackoff.
	Initial time.Duration
	// Max caps the ceiling. If zero, defaults to DefaultMaxBackoff.
	Max time.Duration
}

func (c Config) withDefaults() Config {
	if c.Backoff.Initial == 0 {
		c.Backoff.Initial = DefaultInitialBackoff
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = DefaultMaxBackoff
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WatchWait == 0 {
		c.WatchWait = DefaultWatchWait
	}
	if c.MaxCachedCalls <= 0 {
		c.MaxCachedCalls = DefaultMaxCachedCalls
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.KMSKeys = slices.Clone(c.KMSKeys)
	return c
}

// String describes c without its secrets: the token and keys are redacted.
func (c Config) String() string {
	return fmt.Sprintf("kms.Config{URL: %q, Certificate: %s, Token: %s, TokenSource: %t, DeviceKey: %s, KMSKeys: %d, RootCAs: %t, HTTPClient: %t, Backoff: %+v, RequestTimeout: %s, WatchWait: %s}",
		c.URL, redacted(len(c.Certificate.Certificate) > 0), redacted(c.Token != ""), c.TokenSource != nil, redacted(c.DeviceKey != nil),
		len(c.KMSKeys), c.RootCAs != nil, c.HTTPClient != nil, c.Backoff, c.RequestTimeout, c.WatchWait)
}

// GoString is String, so that %#v does not reveal secrets either.
func (c Config) GoString() string { return c.String() }

// LogValue implements [slog.LogValuer] without the secrets.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", c.URL),
		slog.Bool("certificate", len(c.Certificate.Certificate) > 0),
		slog.Bool("token", c.Token != "" || c.TokenSource != nil),
	)
}

func redacted(set bool) string {
	if set {
		return "[REDACTED]"
	}
	return "none"
}
