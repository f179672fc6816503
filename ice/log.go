package ice

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pion/logging"
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

// slogFactory adapts a *slog.Logger to pion's logging.LoggerFactory.
type slogFactory struct {
	log *slog.Logger
	red *redactor
	// problem, if set, receives pion's warnings and errors (redacted): the
	// only way pion reports why a TURN allocation failed.
	problem func(msg string)
}

func (f *slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{log: f.log.With("pion", scope), red: f.red, problem: f.problem}
}

// levelTrace is below slog.LevelDebug: pion's per-packet trace messages.
const levelTrace = slog.LevelDebug - 4

// slogLeveled passes pion's messages on with the levels lowered by one
// step: pion reports routine events (state changes, a failed check) as
// Info and Warn, which for a library embedded in an application are debug
// and info material.
type slogLeveled struct {
	log     *slog.Logger
	red     *redactor
	problem func(msg string)
}

func (l *slogLeveled) emit(level slog.Level, msg string) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, "ice: "+l.red.redact(msg))
}

func (l *slogLeveled) emitf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.emit(level, fmt.Sprintf(format, args...))
}

func (l *slogLeveled) Trace(msg string)                  { l.emit(levelTrace, msg) }
func (l *slogLeveled) Tracef(format string, args ...any) { l.emitf(levelTrace, format, args...) }
func (l *slogLeveled) Debug(msg string)                  { l.emit(levelTrace, msg) }
func (l *slogLeveled) Debugf(format string, args ...any) { l.emitf(levelTrace, format, args...) }
func (l *slogLeveled) Info(msg string)                   { l.emit(slog.LevelDebug, msg) }
func (l *slogLeveled) Infof(format string, args ...any)  { l.emitf(slog.LevelDebug, format, args...) }
func (l *slogLeveled) Warn(msg string)                   { l.report(slog.LevelInfo, msg) }
func (l *slogLeveled) Warnf(format string, args ...any) {
	l.report(slog.LevelInfo, fmt.Sprintf(format, args...))
}
func (l *slogLeveled) Error(msg string) { l.report(slog.LevelWarn, msg) }
func (l *slogLeveled) Errorf(format string, args ...any) {
	l.report(slog.LevelWarn, fmt.Sprintf(format, args...))
}

func (l *slogLeveled) report(level slog.Level, msg string) {
	if l.problem != nil {
		l.problem(l.red.redact(msg))
	}
	l.emit(level, msg)
}
