package ice

import (
	"strings"
	"sync"
)

// redactor removes known secrets (ICE passwords, TURN credentials) from
// text before it is logged. pion logs the remote ICE password when an
// agent starts, so its messages pass through here.
type redactor struct {
	mu      sync.RWMutex
	secrets []string
}

func (r *redactor) add(s string) {
	if s == "" {
		return
	}
	r.mu.Lock()
	r.secrets = append(r.secrets, s)
	r.mu.Unlock()
}

func (r *redactor) redact(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}
