package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestExampleRuns builds the example and runs it as a user would, briefly,
// in each keying mode and with the relay forced: it must exit 0 and print
// the path, keying, rotation and zero-loss lines.
func TestExampleRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "call")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"-duration", "2500ms", "-rotate", "1s", "-rtcp-interval", "500ms"}, []string{
			`(?m)^path: +host 127\.0\.0\.1:\d+ -> (host|prflx) 127\.0\.0\.1:\d+ over udp \(connected`,
			`(?m)^keying: +hybrid, profile AEAD_AES_128_GCM, codec PCMU/8000$`,
			`(?m)^rotation: caller now sends under key version [2-9]`,
			`(?m)^losses: +0$`,
			`(?m)^quality: +caller receives with loss 0\.00%, jitter [0-9.]+[µm]?s, RTT [0-9.]+[µm]s, MOS 4\.4\d \(R 93\.2\); [1-9]\d* RTCP reports sent, [1-9]\d* received$`,
			`(?m)^quality: +callee receives with loss 0\.00%`,
			`(?m)^audio: .*\.wav \(2\.5 s, 440 Hz tone level (0\.9\d|1\.00)\)$`,
		}},
		{[]string{"-keying", "dtls", "-duration", "500ms", "-relay"}, []string{
			`(?m)^path: +relay .* via relay turn:`,
			`(?m)^keying: +dtls, profile AEAD_AES_128_GCM`,
			`(?m)^losses: +0$`,
		}},
		// The default -rotate works for short calls too: the KMS's
		// activation delay is part of the schedule.
		{[]string{"-duration", "1s"}, []string{
			`(?m)^rotation: caller now sends under key version [2-9]`,
			`(?m)^losses: +0$`,
		}},
		{[]string{"-keying", "kms", "-duration", "1500ms"}, []string{
			`(?m)^rotation: caller now sends under key version [2-9]`,
			`(?m)^losses: +0$`,
		}},
		{[]string{"-keying", "kms", "-duration", "2500ms", "-rotate", "1s"}, []string{
			`(?m)^keying: +kms,`,
			`(?m)^rotation: `,
			`(?m)^losses: +0$`,
		}},
	}
	for _, tt := range tests {
		cmd := exec.Command(bin, append(tt.args, "-out", filepath.Join(t.TempDir(), "rx.wav"))...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", tt.args, err, out)
		}
		for _, re := range tt.want {
			if !regexp.MustCompile(re).Match(out) {
				t.Errorf("%v: output lacks %s:\n%s", tt.args, re, out)
			}
		}
	}
}
