package pionlog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestLevelsRedactionAndProblems(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: LevelTrace}))
	var problems []string
	f := &Factory{
		Log:     log,
		Prefix:  "x: ",
		Redact:  func(s string) string { return strings.ReplaceAll(s, "hunter2", "[redacted]") },
		Problem: func(s string) { problems = append(problems, s) },
	}
	l := f.NewLogger("agent")
	l.Tracef("trace %d", 1)
	l.Debug("debug")
	l.Info("info")
	l.Warnf("warn pwd=%s", "hunter2")
	l.Error("error")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG-4 msg="x: trace 1" pion=agent`,
		`level=DEBUG-4 msg="x: debug"`,
		`level=DEBUG msg="x: info"`,
		`level=INFO msg="x: warn pwd=[redacted]"`,
		`level=WARN msg="x: error"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("a secret reached the log")
	}
	if len(problems) != 2 || problems[0] != "warn pwd=[redacted]" || problems[1] != "error" {
		t.Errorf("problems = %q", problems)
	}
}

func TestMaxLevelAndNilLogger(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	(&Factory{Log: log, MaxLevel: slog.LevelDebug}).NewLogger("dtls").Error("conn closed")
	if !strings.Contains(buf.String(), `level=DEBUG msg="conn closed"`) {
		t.Errorf("capped error logged as %q", buf.String())
	}
	var problems int
	l := (&Factory{Problem: func(string) { problems++ }}).NewLogger("s")
	l.Errorf("e %d", 1)
	l.Info("silent")
	if problems != 1 {
		t.Errorf("with no logger, Problem saw %d messages, want 1", problems)
	}
}

// countHandler counts records by level.
type countHandler struct {
	mu sync.Mutex
	n  map[slog.Level]int
	// suppressed sums the "suppressed" attributes of summary records.
	suppressed int64
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = make(map[slog.Level]int)
	}
	h.n[r.Level]++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			h.suppressed += a.Value.Int64()
		}
		return true
	})
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }

// A flood of pion warnings reaches the log as Burst records and one
// summary per Interval; Problem sees them all, and Debug is not limited.
func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &countHandler{}
		var problems int
		f := &Factory{Log: slog.New(h), Problem: func(string) { problems++ }}
		a, b := f.NewLogger("agent"), f.NewLogger("turn")
		for i := range 1000 {
			a.Warnf("discard message %d", i)
			b.Info("routine")
		}
		if got := h.n[slog.LevelInfo]; got != Burst {
			t.Errorf("%d Info records logged in one interval, want %d", got, Burst)
		}
		if h.n[slog.LevelDebug] != 1000 || problems != 1000 {
			t.Errorf("debug records %d and problems %d, want 1000 each", h.n[slog.LevelDebug], problems)
		}
		time.Sleep(Interval)
		a.Error("after the interval")
		if h.n[slog.LevelWarn] != 2 || h.suppressed != 1000-Burst {
			t.Errorf("after the interval: %d Warn records (want the summary and the record) reporting %d suppressed, want %d",
				h.n[slog.LevelWarn], h.suppressed, 1000-Burst)
		}
	})
}
