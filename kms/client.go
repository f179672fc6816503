package kms

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/securecall/securecall/kms/internal/wire"
	"github.com/securecall/securecall/media"
)

// Client fetches, caches and follows the keys of calls from a KMS. It
// implements [media.KeySource] and [media.KeyWatcher]. All methods are safe
// for concurrent use.
type Client struct {
	cfg   Config
	base  string   // scheme://host, no trailing slash: bases[0]
	bases []string // every configured replica, base first (failover.go)
	cur   atomic.Int32
	hc    *http.Client
	ownHC bool
	key   *ecdsa.PrivateKey
	kid   string
	jwk   []byte // the device's public key as a JWK
	// signers are the pinned KMS signing keys by key id (RFC 7638
	// thumbprint, the kid of the KMS's signatures).
	signers map[string]*ecdsa.PublicKey

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	cache  map[string]*cacheEntry // at most cfg.MaxCachedCalls entries
	// nextExpiry is no later than the earliest expiry of a cached key
	// (zero: none expires): before it, no cached key needs wiping.
	nextExpiry time.Time
	tick       uint64
	retryAt    time.Time // no request before: the KMS said 429, Retry-After
	flights    map[string]*flight
	// asking counts, per URI, the key requests in flight and the forgets
	// of the call since (see askKeys): an answer that lands after its
	// call was forgotten is not cached. An entry lives while a request
	// of its URI is in flight.
	asking map[string]*asking

	// opened, if set (by tests, before any request), sees the keys of
	// every delivery the client opens, before it hands any on.
	opened func([]media.CallKey)
}

var (
	_ media.KeySource  = (*Client)(nil)
	_ media.KeyWatcher = (*Client)(nil)
)

type cacheEntry struct {
	keys map[uint32]media.CallKey
	jwes map[uint32]string // the JWE each cached key came in
	min  uint32
	// gone are versions at or above min the KMS said it delivers no more
	// (revoked or expired), at most maxGone: a response it sent before
	// saying so does not bring them back.
	gone []uint32
	used uint64 // c.tick at the last fetch or use, for eviction
}

// maxGone bounds cacheEntry.gone; past it the lowest is let go of.
const maxGone = 64

// flight is one fetch shared by every concurrent Fetch of a URI. Its keys
// are its own: each waiter copies them, and the last one to leave (or the
// fetch, landing after every waiter gave up) wipes them.
type flight struct {
	done    chan struct{}
	joined  int // Fetch calls that joined it, for tests
	waiting int // Fetch calls that joined and have not left
	landed  bool
	keys    []media.CallKey
	err     error
}

// leaveLocked marks one waiter gone, wiping the keys once the fetch has
// landed and no waiter is left. Called with c.mu held.
func (f *flight) leaveLocked() {
	f.waiting--
	f.wipeIfDoneLocked()
}

// wipeIfDoneLocked wipes the flight's keys if it has landed and every
// waiter has left. Called with c.mu held.
func (f *flight) wipeIfDoneLocked() {
	if f.landed && f.waiting == 0 {
		for _, k := range f.keys {
			clear(k.Key)
		}
		f.keys = nil
	}
}

// CallOptions describes a call key to create.
type CallOptions struct {
	// Participants are the identities allowed to fetch the call's keys.
	// Required. The creator is not added implicitly.
	Participants []string
	// RotateEvery, if positive, makes the KMS rotate the key on this
	// schedule (at least 10 ms). If zero, the key rotates only on demand
	// and on participant removal.
	RotateEvery time.Duration
	// KeyLifetime is each version's lifetime after activation. If zero,
	// the server's default (DefaultKeyLifetime for the reference server).
	KeyLifetime time.Duration
}

var errClientClosed = fmt.Errorf("kms: client: %w", net.ErrClosed)

// NewClient checks cfg and returns a client. It does no I/O.
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	bases, err := parseBases(cfg)
	if err != nil {
		return nil, err
	}
	key := cfg.DeviceKey
	hasCert := len(cfg.Certificate.Certificate) > 0
	if key == nil && hasCert {
		key, _ = cfg.Certificate.PrivateKey.(*ecdsa.PrivateKey)
	}
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("kms: a P-256 device key is required (Config.DeviceKey or the Certificate's key)")
	}
	if !hasCert && cfg.Token == "" && cfg.TokenSource == nil {
		return nil, errors.New("kms: Config needs a Certificate, a Token or a TokenSource")
	}
	kid, err := wire.KeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("kms: device key: %w", err)
	}
	jwk, err := json.Marshal(jose.JSONWebKey{Key: &key.PublicKey})
	if err != nil {
		return nil, fmt.Errorf("kms: device key: %w", err)
	}
	signers, err := pinSigners(cfg.KMSKeys)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		signers: signers,
		base:    bases[0],
		bases:   bases,
		hc:      cfg.HTTPClient,
		key:     key,
		kid:     kid,
		jwk:     jwk,
		cache:   map[string]*cacheEntry{},
		flights: map[string]*flight{},
		asking:  map[string]*asking{},
	}
	if c.hc == nil {
		tc := &tls.Config{
			RootCAs:            cfg.RootCAs,
			MinVersion:         tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(8),
		}
		if hasCert {
			tc.Certificates = []tls.Certificate{cfg.Certificate}
		}
		// HTTP/2 when the server offers it: a device's fetches and its
		// long-poll watches, one per call, share one connection instead
		// of holding one each.
		// No Proxy: credentials go to the configured host and nowhere
		// else, whatever the environment says.
		c.hc = &http.Client{Transport: &http.Transport{
			ForceAttemptHTTP2:   true,
			TLSClientConfig:     tc,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: cfg.RequestTimeout,
		}}
		c.ownHC = true
	} else {
		hc := *c.hc
		c.hc = &hc
	}
	// Never follow a redirect: the request would carry the client
	// certificate, the token and the proof to wherever it points.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// pinSigners indexes the KMS signing keys by key id; each must be a P-256
// ECDSA public key, and at least one is required.
func pinSigners(keys []crypto.PublicKey) (map[string]*ecdsa.PublicKey, error) {
	if len(keys) == 0 {
		return nil, errors.New("kms: Config.KMSKeys is required: the KMS's signing keys, which every delivery must be signed by")
	}
	out := make(map[string]*ecdsa.PublicKey, len(keys))
	for i, k := range keys {
		pub, ok := k.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("kms: Config.KMSKeys[%d] is %T, want a P-256 *ecdsa.PublicKey", i, k)
		}
		kid, err := wire.KeyID(pub)
		if err != nil {
			return nil, fmt.Errorf("kms: Config.KMSKeys[%d]: %w", i, err)
		}
		out[kid] = pub
	}
	return out, nil
}

// Close ends every fetch and watch in progress, waits for the client's
// goroutines and closes its idle connections. A second call returns an
// error wrapping [net.ErrClosed].
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errClientClosed
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	if c.ownHC {
		c.hc.CloseIdleConnections()
	}
	c.mu.Lock()
	for _, e := range c.cache {
		wipeKeys(e.keys)
	}
	clear(c.cache)
	c.mu.Unlock()
	return nil
}

func wipeKeys(m map[uint32]media.CallKey) {
	for _, k := range m {
		clear(k.Key)
	}
}

// callID checks that uri names a call key at this client's KMS. The URI
// comes from the signaling path, so the call id must be one path segment
// that a KMS could have made: 1 to 128 of URL's unreserved characters
// (RFC 3986 section 2.3; the reference KMS makes 22 of base64url), and not
// a dot segment, which URL path rules resolve to another resource.
func (c *Client) callID(uri string) (string, error) {
	id, ok := c.cutBase(uri)
	if !ok || !validCallID(id) {
		return "", fmt.Errorf("kms: key URI %s is not a call key of %s: %w", quotePrefix(uri, maxQuotedURI), c.base, ErrInvalidKeyURI)
	}
	return id, nil
}

// maxQuotedURI bounds how much of a refused key URI an error quotes: the
// URI comes from the signaling path, and its error may reach every log
// line that records it.
const maxQuotedURI = 96

// quotePrefix quotes at most the first n bytes of s, and says how long s
// was when it cut.
func quotePrefix(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q... (%d bytes)", s[:n], len(s))
}

func validCallID(id string) bool {
	if id == "" || len(id) > 128 || id == "." || id == ".." {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '.', b == '_', b == '~':
		default:
			return false
		}
	}
	return true
}

// Register registers the device's public key under its authenticated
// identity. It is idempotent. With mutual TLS the key must be the
// certificate's.
func (c *Client) Register(ctx context.Context) error {
	body, _ := json.Marshal(wire.RegisterRequest{Key: c.jwk})
	_, err := c.do(ctx, "register", http.MethodPost, wire.PathDevices, nil, body, true, 0)
	return err
}

// CreateCall creates a call key with its first version active at once and
// returns its URI: the value to carry in signaling.
func (c *Client) CreateCall(ctx context.Context, opts CallOptions) (string, error) {
	body, err := json.Marshal(wire.CreateRequest{
		Participants:  opts.Participants,
		RotateEveryMS: opts.RotateEvery.Milliseconds(),
		LifetimeMS:    opts.KeyLifetime.Milliseconds(),
	})
	if err != nil {
		return "", fmt.Errorf("kms: create call: %w", err)
	}
	out, err := c.do(ctx, "create call", http.MethodPost, wire.PathCalls, nil, body, true, 0)
	if err != nil {
		return "", err
	}
	var resp wire.CreateResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return "", fmt.Errorf("kms: create call: %w: %v", ErrMalformed, err)
	}
	if _, err := c.callID(resp.URI); err != nil {
		return "", fmt.Errorf("kms: create call: %w: the KMS named a foreign URI", ErrMalformed)
	}
	return resp.URI, nil
}

// Rotate asks the KMS for a new version of the call key now and returns its
// number. The version activates after the server's activation delay.
func (c *Client) Rotate(ctx context.Context, uri string) (uint32, error) {
	id, err := c.callID(uri)
	if err != nil {
		return 0, err
	}
	return c.rotateLike(ctx, "rotate", http.MethodPost, wire.PathCalls+"/"+id+"/rotate")
}

// RemoveParticipant removes identity from the call (only the call's
// creator may) and rotates the key at once: the removed device can never
// fetch the new version.
func (c *Client) RemoveParticipant(ctx context.Context, uri, identity string) error {
	id, err := c.callID(uri)
	if err != nil {
		return err
	}
	if identity == "" {
		return fmt.Errorf("kms: remove participant: empty identity: %w", ErrNotFound)
	}
	// Escaped, so that an identity with "/" (SPIFFE style) or "?" stays one
	// path segment.
	_, err = c.rotateLike(ctx, "remove participant", http.MethodDelete, wire.PathCalls+"/"+id+"/participants/"+url.PathEscape(identity))
	return err
}

func (c *Client) rotateLike(ctx context.Context, op, method, path string) (uint32, error) {
	out, err := c.do(ctx, op, method, path, nil, nil, true, 0)
	if err != nil {
		return 0, err
	}
	var resp wire.RotateResponse
	if err := json.Unmarshal(out, &resp); err != nil || resp.Version == 0 {
		return 0, fmt.Errorf("kms: %s: %w", op, ErrMalformed)
	}
	return resp.Version, nil
}

// EndCall ends the call named by uri at the KMS (only its creator may):
// scheduled rotation stops, its keys are never delivered again (fetches and
// watches fail with [ErrEnded]) and the KMS destroys them after its
// retention. The client forgets the call's keys. Ending an ended call
// succeeds.
func (c *Client) EndCall(ctx context.Context, uri string) error {
	id, err := c.callID(uri)
	if err != nil {
		return err
	}
	if _, err := c.do(ctx, "end call", http.MethodPost, wire.PathCalls+"/"+id+"/end", nil, nil, true, 0); err != nil {
		return err
	}
	c.Release(uri)
	return nil
}

// Release forgets the cached keys of uri (wiping them), for an application
// that is done with a call it did not end itself. A later Fetch asks the
// KMS again; the answer to a request already on its way is handed to its
// caller but not cached.
func (c *Client) Release(uri string) {
	c.forget(uri)
}

// Keys implements [media.KeySource]; it is [Client.Fetch].
func (c *Client) Keys(ctx context.Context, uri string) ([]media.CallKey, error) {
	return c.Fetch(ctx, uri)
}

// Fetch returns the usable versions of the call key named by uri, in
// ascending order: pre-active, active, and superseded ones still within
// their grace period. Concurrent fetches of one URI share one request.
// When the KMS is unreachable it returns the last keys it fetched that have
// not expired, if any; otherwise an error wrapping [ErrUnavailable]. Keys
// print redacted.
func (c *Client) Fetch(ctx context.Context, uri string) ([]media.CallKey, error) {
	id, err := c.callID(uri)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClientClosed
	}
	f := c.flights[uri]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		c.flights[uri] = f
		c.wg.Add(1)
		go c.fly(f, uri, id)
	}
	f.joined++
	f.waiting++
	c.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		c.mu.Lock()
		f.leaveLocked()
		c.mu.Unlock()
		return nil, fmt.Errorf("kms: fetch %q: %w", uri, ctx.Err())
	}
	var keys []media.CallKey
	if f.err == nil {
		keys = copyKeys(f.keys)
	}
	c.mu.Lock()
	f.leaveLocked()
	c.mu.Unlock()
	if f.err == nil {
		return keys, nil
	}
	if errors.Is(f.err, ErrUnavailable) {
		if keys := c.cached(uri); len(keys) > 0 {
			c.cfg.Logger.Warn("kms: KMS unreachable, serving cached keys", "uri", uri, "versions", len(keys), "err", f.err)
			return keys, nil
		}
	}
	if permanent(f.err) {
		c.forget(uri)
	}
	return nil, f.err
}

func (c *Client) fly(f *flight, uri, id string) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	f.keys, _, f.err = c.fetchKeys(ctx, uri, id, 0, 0, nil)
	cancel()
	c.mu.Lock()
	delete(c.flights, uri)
	f.landed = true
	f.wipeIfDoneLocked() // every waiter gave up
	c.mu.Unlock()
	close(f.done)
}

func copyKeys(keys []media.CallKey) []media.CallKey {
	out := slices.Clone(keys)
	for i := range out {
		out[i].Key = slices.Clone(out[i].Key)
	}
	return out
}

// cached returns the unexpired cached versions of uri, ascending.
func (c *Client) cached(uri string) []media.CallKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Clock()
	c.sweepExpiredLocked(now)
	e := c.cache[uri]
	if e == nil {
		return nil
	}
	var out []media.CallKey
	for _, k := range e.keys {
		if k.Version >= e.min && (k.ExpiresAt.IsZero() || now.Before(k.ExpiresAt)) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b media.CallKey) int { return int(a.Version) - int(b.Version) })
	return copyKeys(out)
}

func (c *Client) forget(uri string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.asking[uri]; a != nil {
		a.forgets++
	}
	if e := c.cache[uri]; e != nil {
		wipeKeys(e.keys)
		delete(c.cache, uri)
	}
}

// remember caches the keys of a fetch and returns the ones to hand on: all
// but those the client has since learnt the KMS delivers no more (below
// the minimum, revoked, expired: see learn), which a response sent before
// may still carry, and which it wipes. A full fetch (after == 0) replaces
// the versions that were there, so that versions the KMS no longer
// delivers are dropped, but not what the client learnt of the call.
// Replaced key material is wiped; callers hold their own copies. An
// answer to a request (ticket, from askKeys) sent before the call was
// forgotten is handed on and not cached.
func (c *Client) remember(uri string, ticket uint64, w withdrawals, after uint32, keys []media.CallKey, jwes []string) []media.CallKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return keys
	}
	if a := c.asking[uri]; a != nil && a.forgets != ticket {
		return keys
	}
	e := c.entryLocked(uri)
	if after == 0 {
		wipeKeys(e.keys)
		clear(e.keys)
		clear(e.jwes)
	}
	c.tick++
	e.used = c.tick
	e.raiseMinLocked(w.min)
	for _, v := range w.revoked {
		e.dropLocked(v)
	}
	out := keys[:0]
	for i, k := range keys {
		if k.Version < e.min || slices.Contains(e.gone, k.Version) {
			clear(k.Key)
			continue
		}
		out = append(out, k)
		if old, ok := e.keys[k.Version]; ok {
			clear(old.Key)
		}
		k.Key = slices.Clone(k.Key)
		e.keys[k.Version] = k
		e.jwes[k.Version] = jwes[i]
		c.noteExpiryLocked(k.ExpiresAt)
	}
	clear(keys[len(out):])
	c.sweepExpiredLocked(c.cfg.Clock())
	return out
}

// noteExpiryLocked notes the expiry of a key being cached. Called with
// c.mu held.
func (c *Client) noteExpiryLocked(t time.Time) {
	if !t.IsZero() && (c.nextExpiry.IsZero() || t.Before(c.nextExpiry)) {
		c.nextExpiry = t
	}
}

// sweepExpiredLocked wipes the cached keys of every call that have
// expired by now, once the earliest expiry has passed: the cache never
// serves them again. It runs whenever a fetch lands or keys are served
// from the cache. Called with c.mu held.
func (c *Client) sweepExpiredLocked(now time.Time) {
	if c.nextExpiry.IsZero() || now.Before(c.nextExpiry) {
		return
	}
	c.nextExpiry = time.Time{}
	for _, e := range c.cache {
		for v, k := range e.keys {
			switch {
			case k.ExpiresAt.IsZero():
			case !now.Before(k.ExpiresAt):
				clear(k.Key)
				delete(e.keys, v)
				delete(e.jwes, v)
			default:
				c.noteExpiryLocked(k.ExpiresAt)
			}
		}
	}
}

// entryLocked returns the cache entry of uri, making one (and room for
// it) if there is none. Called with c.mu held.
func (c *Client) entryLocked(uri string) *cacheEntry {
	e := c.cache[uri]
	if e == nil {
		if len(c.cache) >= c.cfg.MaxCachedCalls {
			c.evictLocked()
		}
		e = &cacheEntry{keys: map[uint32]media.CallKey{}, jwes: map[uint32]string{}}
		c.cache[uri] = e
	}
	return e
}

// raiseMinLocked raises the entry's minimum to min, wiping the versions
// below it. Called with c.mu held.
func (e *cacheEntry) raiseMinLocked(min uint32) {
	if min <= e.min {
		return
	}
	e.min = min
	for v, k := range e.keys {
		if v < min {
			clear(k.Key)
			delete(e.keys, v)
			delete(e.jwes, v)
		}
	}
	e.gone = slices.DeleteFunc(e.gone, func(v uint32) bool { return v < min })
}

// dropLocked wipes version v of the entry and remembers that the KMS
// delivers it no more. Called with c.mu held.
func (e *cacheEntry) dropLocked(v uint32) {
	if k, ok := e.keys[v]; ok {
		clear(k.Key)
		delete(e.keys, v)
		delete(e.jwes, v)
	}
	i, found := slices.BinarySearch(e.gone, v) // kept sorted
	if v < e.min || found {
		return
	}
	if len(e.gone) >= maxGone {
		if i == 0 {
			return // below every one kept
		}
		e.gone = slices.Delete(e.gone, 0, 1) // the lowest
		i--
	}
	e.gone = slices.Insert(e.gone, i, v)
}

// learn applies what the KMS said in refusing version of uri to the
// cache, the moment the client hears it: a version revoked (compromised,
// destroyed) or expired is wiped and never served or cached again, one
// below the call's minimum wipes every version up to it, and an ended
// call, or one this device is no longer a participant of, loses its
// entry. Other errors say nothing about the cached keys.
func (c *Client) learn(uri string, version uint32, err error) {
	switch {
	case errors.Is(err, ErrEnded) || errors.Is(err, ErrForbidden):
		c.forget(uri)
		return
	case !errors.Is(err, ErrRevoked) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrBelowMinimum):
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	// An entry even for a call not cached: a fetch in progress may land
	// after this.
	e := c.entryLocked(uri)
	if errors.Is(err, ErrBelowMinimum) && version < math.MaxUint32 {
		e.raiseMinLocked(version + 1)
		return
	}
	e.dropLocked(version)
}

// evictLocked drops the least recently used cache entry. Called with c.mu
// held.
func (c *Client) evictLocked() {
	var oldest string
	var used uint64
	for uri, e := range c.cache {
		if oldest == "" || e.used < used {
			oldest, used = uri, e.used
		}
	}
	if e := c.cache[oldest]; e != nil {
		wipeKeys(e.keys)
		delete(c.cache, oldest)
	}
}

// known returns the cached key that came in exactly this JWE: a repeated
// delivery needs no second key agreement. Identical bytes were already
// checked and opened once.
func (c *Client) known(uri string) func(version uint32, jwe string) (media.CallKey, bool) {
	return func(version uint32, jwe string) (media.CallKey, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		e := c.cache[uri]
		if e == nil || e.jwes[version] != jwe {
			return media.CallKey{}, false
		}
		k, ok := e.keys[version]
		if ok {
			k.Key = slices.Clone(k.Key)
		}
		return k, ok
	}
}

// withdrawals is what a keys answer says the call has withdrawn.
type withdrawals struct {
	count   uint64   // wire.KeysResponse.Withdrawn
	min     uint32   // the call's minimum version
	revoked []uint32 // ascending
}

// fetchKeys asks for the versions above after, holding up to wait. A watch
// that tracks withdrawals passes the count it has seen in seen (nil: it
// does not track), and is answered as soon as that count changes too.
func (c *Client) fetchKeys(ctx context.Context, uri, id string, after uint32, wait time.Duration, seen *uint64) ([]media.CallKey, withdrawals, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(uint64(after), 10))
	}
	if wait > 0 {
		q.Set("wait", strconv.FormatInt(wait.Milliseconds(), 10))
	}
	if seen != nil {
		q.Set(wire.QueryWithdrawn, strconv.FormatUint(*seen, 10))
	}
	ticket := c.askKeys(uri)
	defer c.answered(uri)
	out, err := c.do(ctx, "fetch", http.MethodGet, wire.PathCalls+"/"+id+"/keys", q, nil, false, wait)
	if err != nil {
		return nil, withdrawals{}, err
	}
	resp, keys, jwes, err := parseKeysResponse(out, uri, id, after, c.key, c.kid, c.signers, c.known(uri))
	if err != nil {
		return nil, withdrawals{}, err
	}
	if c.opened != nil {
		c.opened(keys)
	}
	w := withdrawals{count: resp.Withdrawn, min: resp.MinVersion, revoked: resp.Revoked}
	return c.remember(uri, ticket, w, after, keys, jwes), w, nil
}

// asking is what the client tracks of a URI's key requests in flight.
type asking struct {
	n       int    // requests in flight
	forgets uint64 // forgets of the call while any was
}

// askKeys notes a key request of uri going out and returns its ticket,
// which remember checks: a forget of the call meanwhile (Release,
// EndCall, a permanent refusal) makes the answer one for a call the
// client no longer keeps.
func (c *Client) askKeys(uri string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.asking[uri]
	if a == nil {
		a = &asking{}
		c.asking[uri] = a
	}
	a.n++
	return a.forgets
}

// answered notes the end of a key request of uri.
func (c *Client) answered(uri string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := c.asking[uri]; a != nil {
		if a.n--; a.n == 0 {
			delete(c.asking, uri)
		}
	}
}

// FetchVersion returns one version of the call key, for a receiver that
// meets a version it does not have. It fails with an error wrapping
// [ErrRevoked] for a compromised or destroyed version, [ErrBelowMinimum]
// below the call's minimum, or [ErrExpired]; the client then wipes that
// version (below the minimum, every version up to it) from its cache and
// never serves or caches it again. After [ErrEnded] or [ErrForbidden] it
// forgets the call's keys.
func (c *Client) FetchVersion(ctx context.Context, uri string, version uint32) (media.CallKey, error) {
	id, err := c.callID(uri)
	if err != nil {
		return media.CallKey{}, err
	}
	q := url.Values{"version": {strconv.FormatUint(uint64(version), 10)}}
	out, err := c.do(ctx, "fetch", http.MethodGet, wire.PathCalls+"/"+id+"/keys", q, nil, false, 0)
	if err != nil {
		c.learn(uri, version, err)
		return media.CallKey{}, err
	}
	_, keys, _, err := parseKeysResponse(out, uri, id, version-1, c.key, c.kid, c.signers, nil)
	if err != nil {
		c.learn(uri, version, err)
		return media.CallKey{}, err
	}
	if c.opened != nil {
		c.opened(keys)
	}
	if len(keys) != 1 || keys[0].Version != version {
		for _, k := range keys {
			clear(k.Key)
		}
		return media.CallKey{}, &DeliveryError{URI: uri, Version: version, Reason: ErrBinding, Detail: "the KMS sent other versions"}
	}
	return keys[0], nil
}

// parseKeysResponse checks and opens a key delivery: the response must be
// for uri and call id, list versions above after in strictly ascending
// order, none below its minimum, each a JWE that passes [unwrapKey] (or,
// if known is not nil, one that known already opened). It returns the keys
// and the JWEs they came in.
func parseKeysResponse(body []byte, uri, id string, after uint32, priv *ecdsa.PrivateKey, kid string,
	signers map[string]*ecdsa.PublicKey, known func(uint32, string) (media.CallKey, bool)) (wire.KeysResponse, []media.CallKey, []string, error) {
	var resp wire.KeysResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return resp, nil, nil, &DeliveryError{URI: uri, Reason: ErrMalformed, Detail: err.Error()}
	}
	if resp.URI != uri || resp.CallID != id {
		return resp, nil, nil, &DeliveryError{URI: uri, Reason: ErrBinding, Detail: "response for another key"}
	}
	if err := checkRevoked(resp); err != nil {
		return resp, nil, nil, &DeliveryError{URI: uri, Reason: ErrMalformed, Detail: err.Error()}
	}
	keys := make([]media.CallKey, 0, len(resp.Keys))
	jwes := make([]string, 0, len(resp.Keys))
	// refuse wipes the keys opened so far: none is handed on.
	refuse := func(err error) (wire.KeysResponse, []media.CallKey, []string, error) {
		for _, k := range keys {
			clear(k.Key)
		}
		return resp, nil, nil, err
	}
	prev := after
	for _, wk := range resp.Keys {
		if wk.Version <= prev {
			return refuse(&DeliveryError{URI: uri, Version: wk.Version, Reason: ErrBinding, Detail: "versions out of order or not asked for"})
		}
		if wk.Version < resp.MinVersion {
			return refuse(&DeliveryError{URI: uri, Version: wk.Version, Reason: ErrBelowMinimum, Detail: fmt.Sprintf("minimum is %d", resp.MinVersion)})
		}
		k, ok := media.CallKey{}, false
		if known != nil {
			k, ok = known(wk.Version, wk.JWE)
		}
		if !ok {
			var err error
			if k, err = unwrapKey(wk.JWE, priv, kid, signers, wire.Binding{URI: uri, CallID: id, Version: wk.Version}); err != nil {
				return refuse(err)
			}
		}
		keys = append(keys, k)
		jwes = append(jwes, wk.JWE)
		prev = wk.Version
	}
	return resp, keys, jwes, nil
}

// checkRevoked refuses a list of revoked versions the KMS would not send:
// longer than wire.MaxRevokedListed, out of order, below the minimum or
// above the latest version. The withdrawal count is the KMS's token, only
// sent back.
func checkRevoked(resp wire.KeysResponse) error {
	if len(resp.Revoked) > wire.MaxRevokedListed {
		return fmt.Errorf("%d revoked versions listed, at most %d", len(resp.Revoked), wire.MaxRevokedListed)
	}
	prev := uint32(0)
	for _, v := range resp.Revoked {
		if v <= prev || v < resp.MinVersion || v > resp.Latest {
			return fmt.Errorf("revoked version %d out of order or outside %d..%d", v, resp.MinVersion, resp.Latest)
		}
		prev = v
	}
	return nil
}

// Watch calls fn with every version of the call key newer than the newest
// it has reported, in ascending order, first with the versions usable now
// and then as the KMS publishes new ones (long-poll). fn runs on Watch's
// goroutine, never concurrently. Watch retries failures with backoff and
// returns only when ctx is done (ctx.Err() wrapped), when the client is
// closed ([net.ErrClosed] wrapped) or on a permanent error: unauthorized,
// forbidden (for example after removal), not found, or an invalid delivery.
func (c *Client) Watch(ctx context.Context, uri string, fn func(media.CallKey)) error {
	return c.watch(ctx, uri, false, func(ch media.KeyChange) { fn(ch.Key) })
}

// WatchChanges is [Client.Watch] that also reports what the KMS withdraws
// from the call while it is up ([media.KeyChangeWatcher]): when a version
// is marked compromised or destroyed, or the call's minimum version is
// raised, fn receives a [media.KeyChange] with the revoked versions (the
// newest 64 versions' at most) and the minimum, within one round trip of
// the change, in the same long-poll that brings new versions. A
// [media.Session] given the client as its KeySource watches through
// WatchChanges and stops sending and receiving under withdrawn versions at
// once. fn sees new versions of an answer before its withdrawals, so that a
// session has the replacement of a compromised version before it drops it.
// The list of withdrawals is protected by the TLS connection to the KMS,
// not by the KMS's signature as keys are: a party able to forge it could
// only take keys away, which one on that path can do by dropping answers.
func (c *Client) WatchChanges(ctx context.Context, uri string, fn func(media.KeyChange)) error {
	return c.watch(ctx, uri, true, fn)
}

// watch is Watch and, with track, WatchChanges.
func (c *Client) watch(ctx context.Context, uri string, track bool, fn func(media.KeyChange)) error {
	id, err := c.callID(uri)
	if err != nil {
		return err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return errClientClosed
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	var last uint32
	var wait time.Duration
	var seen *uint64 // the withdrawals reported; nil until the first answer
	attempt := 0
	for {
		keys, w, err := c.fetchKeys(wctx, uri, id, last, wait, seen)
		if err == nil {
			attempt = 0
			wait = c.cfg.WatchWait
			for _, k := range keys {
				if k.Version > last {
					fn(media.KeyChange{Key: k})
					last = k.Version
				}
			}
			if track && (seen == nil || w.count != *seen) {
				if len(w.revoked) > 0 || w.min > 1 {
					fn(media.KeyChange{Revoked: slices.Clone(w.revoked), MinVersion: w.min})
				}
				seen = &w.count
			}
			continue
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("kms: watch %q: %w", uri, ctx.Err())
		case c.ctx.Err() != nil:
			return errClientClosed
		case permanent(err):
			c.forget(uri)
			return fmt.Errorf("kms: watch %q: %w", uri, err)
		}
		d := c.cfg.Backoff.delay(attempt)
		attempt++
		c.cfg.Logger.Warn("kms: watch failed, retrying", "uri", uri, "in", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
		}
	}
}

// delay returns the wait before retry number attempt (from 0): uniform in
// [0, min(Max, Initial·2^attempt)).
func (b Backoff) delay(attempt int) time.Duration {
	ceil := b.Max
	if attempt < 30 {
		if d := b.Initial << attempt; d > 0 && d < b.Max {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	return mrand.N(ceil)
}

// doAt sends one request to the KMS at base and returns the body of a 2xx
// response. sent reports whether the request reached a connection.
func (c *Client) doAt(ctx context.Context, base, op, method, path string, q url.Values, body []byte, proof bool, wait time.Duration, sent *bool) ([]byte, error) {
	if err := c.waitRetryAfter(ctx); err != nil {
		return nil, fmt.Errorf("kms: %s: %w", op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout+wait)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { *sent = true }})
	unescaped, err := url.PathUnescape(path)
	if err != nil {
		return nil, fmt.Errorf("kms: %s: %w", op, err)
	}
	u := url.URL{Scheme: "https", Host: strings.TrimPrefix(base, "https://"), Path: unescaped, RawPath: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("kms: %s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok := c.cfg.Token
	if c.cfg.TokenSource != nil {
		if tok, err = c.cfg.TokenSource(ctx); err != nil {
			return nil, fmt.Errorf("kms: %s: token: %w", op, err)
		}
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if proof {
		p, err := c.proof(base, method, req.URL.Path, body)
		if err != nil {
			return nil, fmt.Errorf("kms: %s: proof: %w", op, err)
		}
		req.Header.Set(wire.ProofHeader, p)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil && c.ctx.Err() == nil {
			return nil, fmt.Errorf("kms: %s: %w", op, ctx.Err())
		}
		if c.ctx.Err() != nil {
			return nil, errClientClosed
		}
		return nil, fmt.Errorf("kms: %s: %w: %v", op, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		loc := resp.Header.Get("Location")
		if len(loc) > 256 {
			loc = loc[:256]
		}
		return nil, &RedirectError{Op: op, Status: resp.StatusCode, Location: loc}
	}
	out, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxBody))
	if err != nil {
		return nil, fmt.Errorf("kms: %s: %w: %v", op, ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		var e wire.ErrorResponse
		_ = json.Unmarshal(out, &e)
		if resp.StatusCode == http.StatusTooManyRequests && !slices.Contains(scopedLimits, e.Error) {
			// The device's request bucket is empty: nothing leaves before
			// Retry-After.
			c.retryAfter(resp.Header.Get("Retry-After"))
		}
		if len(e.Error) > 64 {
			e.Error = e.Error[:64]
		}
		return nil, &ServerError{Status: resp.StatusCode, Code: e.Error, Op: op}
	}
	return out, nil
}

// scopedLimits are the 429 codes of limits that concern one kind of
// request, not all of them: their Retry-After holds nothing else back.
// Other devices can exhaust the last two (a call's rotation bucket, and
// the replay memory of a KMS before per-device floors), so that holding
// every request for them would let one participant stall another's
// fetches.
var scopedLimits = []string{wire.CodeQuota, wire.CodeTooManyWatches, wire.CodeRotationLimited, wire.CodeTooManyProofs}

// maxRetryAfter caps how long the client honours a Retry-After.
const maxRetryAfter = time.Minute

// retryAfter notes a 429's Retry-After (seconds): no request leaves before
// it has passed.
func (c *Client) retryAfter(h string) {
	secs, err := strconv.Atoi(strings.TrimSpace(h))
	if err != nil || secs <= 0 {
		secs = 1
	}
	at := time.Now().Add(min(time.Duration(secs)*time.Second, maxRetryAfter))
	c.mu.Lock()
	if at.After(c.retryAt) {
		c.retryAt = at
	}
	c.mu.Unlock()
}

// waitRetryAfter waits until a Retry-After the KMS gave has passed.
func (c *Client) waitRetryAfter(ctx context.Context) error {
	c.mu.Lock()
	d := time.Until(c.retryAt)
	c.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return net.ErrClosed
	}
}

// proof signs a proof of freshness for one request to the KMS at base,
// which it names as its audience: a proof captured on its way there is
// refused by any other KMS.
func (c *Client) proof(base, method, path string, body []byte) (string, error) {
	return wire.SignProof(c.key, base, method, path, body, c.cfg.Clock())
}

// String describes the client without its credentials.
func (c *Client) String() string {
	return fmt.Sprintf("kms.Client{URL: %s, DeviceKey: %s}", c.base, c.kid)
}
