package ice

import (
	"strconv"
	"strings"
)

// DroppedSTUN returns how many malformed STUN messages t's guard dropped.
func DroppedSTUN(t *Transport) uint64 { return t.dropped.Load() }

// TURNClientPort returns the local port of t's socket to a TURN server
// over UDP, or 0.
func TURNClientPort(t *Transport) uint16 {
	t.relays.mu.Lock()
	defer t.relays.mu.Unlock()
	for k := range t.relays.byPort {
		if p, ok := strings.CutPrefix(k, "udp:"); ok {
			n, _ := strconv.Atoi(p)
			return uint16(n)
		}
	}
	return 0
}
