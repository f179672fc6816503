// Package pionlog passes the pion libraries' log messages to a
// *slog.Logger, for the packages of this SDK that wrap pion.
//
// pion reports routine events (state changes, a failed check) as Info and
// Warn, which for a library embedded in an application are debug and info
// material, so each level is lowered one step: pion's Error becomes Warn,
// Warn becomes Info, Info becomes Debug, and Debug and Trace become
// [LevelTrace], below Debug.
//
// Many of pion's warnings are about packets from the network (a check
// with a bad password, a datagram from an unknown address), which anyone
// who can reach a socket triggers at will. So the records a Factory logs
// at Info and above are rate-limited: at most [Burst] per [Interval]; the
// rest are counted, and the next record logged after them is preceded by
// one that says how many were suppressed. Debug and Trace records are not
// limited: an application that enables them asked for everything.
// Problem sees every message.
//
// # Concurrency
//
// A Factory and its loggers may be used from any goroutine; Redact and
// Problem must be safe for concurrent use.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pion/logging"
)

// LevelTrace is the level of pion's Debug and Trace messages, below
// slog.LevelDebug: per-packet detail.
const LevelTrace = slog.LevelDebug - 4

// The rate limit on the records a Factory logs at Info and above.
const (
	Burst    = 10
	Interval = time.Minute
)

// Factory implements pion's logging.LoggerFactory. Its loggers share one
// rate limit, so a Factory must not be copied after its first NewLogger.
type Factory struct {
	// Log receives the messages. If nil, nothing is logged (Problem is
	// still called).
	Log *slog.Logger
	// Prefix is put before each message, such as "ice: ".
	Prefix string
	// Redact, if set, rewrites each message before it is logged or passed
	// to Problem, to remove secrets pion may print.
	Redact func(string) string
	// Problem, if set, is called with each Warn and Error message, after
	// Redact: some failures pion reports nowhere else.
	Problem func(string)
	// MaxLevel, if not zero, caps the level messages are logged at.
	MaxLevel slog.Level

	limit limiter // shared by the Factory's loggers
}

// limiter counts the records logged at Info and above in fixed windows of
// Interval.
type limiter struct {
	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // records logged in the window
	suppressed int       // records suppressed since the last one logged
}

// allow reports whether a record may be logged now, and how many were
// suppressed before it.
func (l *limiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= Interval || now.Before(l.start) {
		l.start, l.n = now, 0
	}
	if l.n >= Burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// NewLogger implements logging.LoggerFactory.
func (f *Factory) NewLogger(scope string) logging.LeveledLogger {
	l := &leveled{f: f}
	if f.Log != nil {
		l.log = f.Log.With("pion", scope)
	}
	return l
}

type leveled struct {
	f   *Factory
	log *slog.Logger
}

func (l *leveled) enabled(level slog.Level) bool {
	return l.log != nil && l.log.Enabled(context.Background(), l.cap(level))
}

func (l *leveled) cap(level slog.Level) slog.Level {
	if l.f.MaxLevel != 0 && level > l.f.MaxLevel {
		return l.f.MaxLevel
	}
	return level
}

func (l *leveled) redact(msg string) string {
	if l.f.Redact != nil {
		return l.f.Redact(msg)
	}
	return msg
}

func (l *leveled) emit(level slog.Level, msg string) {
	if !l.enabled(level) {
		return
	}
	level = l.cap(level)
	if level >= slog.LevelInfo {
		ok, suppressed := l.f.limit.allow(time.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			l.log.Log(context.Background(), level, l.f.Prefix+"pion: log records suppressed by the rate limit",
				"suppressed", suppressed, "limit", Burst, "interval", Interval)
		}
	}
	l.log.Log(context.Background(), level, l.f.Prefix+l.redact(msg))
}

func (l *leveled) emitf(level slog.Level, format string, args ...any) {
	if l.enabled(level) {
		l.emit(level, fmt.Sprintf(format, args...))
	}
}

func (l *leveled) report(level slog.Level, msg string) {
	if l.f.Problem != nil {
		l.f.Problem(l.redact(msg))
	}
	l.emit(level, msg)
}

func (l *leveled) reportf(level slog.Level, format string, args ...any) {
	if l.f.Problem != nil || l.enabled(level) {
		l.report(level, fmt.Sprintf(format, args...))
	}
}

func (l *leveled) Trace(msg string)                  { l.emit(LevelTrace, msg) }
func (l *leveled) Tracef(format string, args ...any) { l.emitf(LevelTrace, format, args...) }
func (l *leveled) Debug(msg string)                  { l.emit(LevelTrace, msg) }
func (l *leveled) Debugf(format string, args ...any) { l.emitf(LevelTrace, format, args...) }
func (l *leveled) Info(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l *leveled) Infof(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l *leveled) Warn(msg string)                   { l.report(slog.LevelInfo, msg) }
func (l *leveled) Warnf(format string, args ...any)  { l.reportf(slog.LevelInfo, format, args...) }
func (l *leveled) Error(msg string)                  { l.report(slog.LevelWarn, msg) }
func (l *leveled) Errorf(format string, args ...any) { l.reportf(slog.LevelWarn, format, args...) }
