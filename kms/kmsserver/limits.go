package kmsserver

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// bucket is one token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// limiter is a set of token buckets by key (a device identity, a call id),
// bounded in memory: when it holds maxKeys buckets it forgets the full
// ones (idle keys), and if none is full, refuses new keys until one is.
type limiter struct {
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	maxKeys int
	m       map[string]*bucket
}

func newLimiter(rate float64, burst, maxKeys int) *limiter {
	return &limiter{rate: rate, burst: float64(burst), maxKeys: maxKeys, m: map[string]*bucket{}}
}

// allow takes a token for key; if there is none it says how long until
// there is one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[key]
	if b == nil {
		if len(l.m) >= l.maxKeys {
			for k, o := range l.m {
				if l.refill(o, now) >= l.burst {
					delete(l.m, k)
				}
			}
			if len(l.m) >= l.maxKeys {
				return false, time.Second
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.m[key] = b
	}
	if l.refill(b, now) < 1 {
		return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
	}
	b.tokens--
	return true, 0
}

// peek reports whether key has a token, without taking it.
func (l *limiter) peek(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[key]
	if b == nil || l.refill(b, now) >= 1 {
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
}

func (l *limiter) refill(b *bucket, now time.Time) float64 {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	return b.tokens
}

// counter counts what each key holds (running calls per creator, watches
// per device).
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(key string, d int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	n := c.m[key] + d
	if n <= 0 {
		delete(c.m, key)
	} else {
		c.m[key] = n
	}
	return n
}

// denials aggregates refused requests for the audit log: an unauthenticated
// or misbehaving client must not drive one fsynced entry per request. Each
// interval yields at most one entry per (action, actor, call, reason), with
// the count, and at most maxKeys such entries; what does not fit is counted
// in one entry with actor "(other)".
type denials struct {
	mu      sync.Mutex
	maxKeys int
	m       map[denialKey]int
	other   int
	first   time.Time
}

type denialKey struct{ action, actor, call, code string }

func (d *denials) add(k denialKey, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[denialKey]int{}
	}
	if len(d.m) == 0 && d.other == 0 {
		d.first = now
	}
	if _, ok := d.m[k]; ok || len(d.m) < d.maxKeys {
		d.m[k]++
		return
	}
	d.other++
}

// take returns the audit entries for what was counted and resets.
func (d *denials) take(now time.Time) []AuditEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]denialKey, 0, len(d.m))
	for k := range d.m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		return slices.Compare([]string{a.action, a.actor, a.call, a.code}, []string{b.action, b.actor, b.call, b.code}) < 0
	})
	var out []AuditEntry
	for _, k := range keys {
		out = append(out, AuditEntry{Time: now.UTC(), Action: k.action, Actor: k.actor, Call: k.call, Outcome: "denied",
			Detail: denialDetail(k.code, d.m[k], d.first, now)})
	}
	if d.other > 0 {
		out = append(out, AuditEntry{Time: now.UTC(), Action: "denials", Actor: "(other)", Outcome: "denied",
			Detail: denialDetail("various", d.other, d.first, now)})
	}
	clear(d.m)
	d.other = 0
	return out
}

func denialDetail(code string, n int, first, now time.Time) string {
	if n == 1 {
		return code
	}
	return fmt.Sprintf("%s x%d since %s", code, n, first.UTC().Format(time.RFC3339))
}
