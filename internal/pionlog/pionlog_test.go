package pionlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
