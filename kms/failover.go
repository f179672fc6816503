package kms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/securecall/securecall/kms/internal/wire"
)

// parseBases checks Config.URL and Config.URLs and returns the distinct
// base URLs (https://host), URL first.
func parseBases(cfg Config) ([]string, error) {
	var bases []string
	for i, raw := range append([]string{cfg.URL}, cfg.URLs...) {
		field := "Config.URL"
		if i > 0 {
			field = fmt.Sprintf("Config.URLs[%d]", i-1)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("kms: %s must be an https URL without path, got %q", field, raw)
		}
		if b := "https://" + u.Host; !slices.Contains(bases, b) {
			bases = append(bases, b)
		}
	}
	return bases, nil
}

// cutBase returns the call id of a key URI under any configured base.
func (c *Client) cutBase(uri string) (string, bool) {
	for _, b := range c.bases {
		if id, ok := strings.CutPrefix(uri, b+wire.PathCalls+"/"); ok {
			return id, true
		}
	}
	return "", false
}

// do sends one request and returns the body of a 2xx response. With
// several KMS addresses it starts at the one that answered last and, on a
// connection error or a 5xx, tries each other one once, in order: never a
// host outside Config.URL and Config.URLs. A request that may have reached
// a KMS (a connection was made) and changes state (anything but GET) is
// only retried elsewhere after a 5xx, which says it was not done, so a
// rotation is never asked for twice.
func (c *Client) do(ctx context.Context, op, method, path string, q url.Values, body []byte, proof bool, wait time.Duration) ([]byte, error) {
	n := len(c.bases)
	start := int(c.cur.Load())
	var err error
	for i := range n {
		at := (start + i) % n
		sent := false
		var out []byte
		out, err = c.doAt(ctx, c.bases[at], op, method, path, q, body, proof, wait, &sent)
		if proof && staleProof(err) {
			// Refused before anything changed: the KMS let go of older
			// proofs of this device's, or the clocks differ. Sign afresh,
			// once.
			sent = false
			out, err = c.doAt(ctx, c.bases[at], op, method, path, q, body, proof, wait, &sent)
		}
		if err == nil {
			if at != start {
				c.cur.Store(int32(at))
				c.cfg.Logger.Info("kms: failed over", "to", c.bases[at])
			}
			return out, nil
		}
		if !failover(err, method, sent) || ctx.Err() != nil || c.ctx.Err() != nil {
			return nil, err
		}
		if i+1 < n {
			c.cfg.Logger.Warn("kms: KMS address failed, trying the next", "at", c.bases[at], "err", err)
		}
	}
	return nil, err
}

// staleProof reports whether err is the KMS refusing a request's proof of
// freshness as stale.
func staleProof(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.Code == wire.CodeStaleProof
}

// failover says whether err, for a request with method, may be retried at
// another replica.
func failover(err error, method string, sent bool) bool {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Status/100 == 5
	}
	if !errors.Is(err, ErrUnavailable) {
		return false
	}
	return method == http.MethodGet || !sent
}
