package securecall_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
)

// recordHandler keeps the records of one message.
type recordHandler struct {
	msg     string
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.mu.Lock()
		h.records = append(h.records, r.Clone())
		h.mu.Unlock()
	}
	return nil
}

// TestCallDTLSRetransmitFromICERTT is issue 12 finding 6 at the Call: the
// media session's DTLS retransmission interval comes from the RTT that ICE
// measured (twice it, from 100 ms), not from pion/dtls's 1 s default, which
// the session would use were the RTT not passed on. The interval each side
// uses is read from its debug log.
func TestCallDTLSRetransmitFromICERTT(t *testing.T) {
	h := &recordHandler{msg: "media: DTLS handshake"}
	cfg := securecall.Config{ICE: loopbackICE(), Logger: slog.New(h)}
	pair(t, cfg, cfg)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.records) != 2 {
		t.Fatalf("%d DTLS handshakes logged, want one per side", len(h.records))
	}
	for _, r := range h.records {
		var got time.Duration
		r.Attrs(func(at slog.Attr) bool {
			if at.Key == "retransmit" {
				got = at.Value.Duration()
			}
			return true
		})
		// Loopback's RTT is far below 500 ms: anything from the floor up
		// to, but not including, the 1 s default shows it was used.
		if got < media.MinRetransmitInterval || got >= media.DefaultRetransmitInterval {
			t.Errorf("DTLS retransmission interval %v, want one from ICE's RTT in [%v, %v)", got, media.MinRetransmitInterval, media.DefaultRetransmitInterval)
		}
	}
}
