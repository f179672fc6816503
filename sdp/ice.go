package sdp

import (
	"fmt"
	"log/slog"
)

// ICE holds the ICE attributes of a media section (RFC 8839): credentials,
// options, candidates and the end-of-candidates marker. Session-level
// credentials and options apply to every section that does not set its own.
//
// Pwd is a secret of the call: String, GoString and LogValue print it
// redacted, so an ICE value can be logged.
type ICE struct {
	// Ufrag is the username fragment ("a=ice-ufrag"), 4 to 256 ice-chars.
	Ufrag string
	// Pwd is the password ("a=ice-pwd"), 22 to 256 ice-chars.
	Pwd string
	// Options are the "a=ice-options" tags, such as "trickle".
	Options []string
	// Candidates are the "a=candidate" lines of the section.
	Candidates []Candidate
	// EndOfCandidates reports "a=end-of-candidates" (RFC 8840): the
	// sender has no more candidates to trickle.
	EndOfCandidates bool
}

// redacted is what secret fields print as.
const redacted = "[REDACTED]"

// String returns a summary with the password redacted.
func (i ICE) String() string {
	pwd := ""
	if i.Pwd != "" {
		pwd = redacted
	}
	return fmt.Sprintf("{Ufrag:%s Pwd:%s Options:%v Candidates:%d EndOfCandidates:%t}",
		i.Ufrag, pwd, i.Options, len(i.Candidates), i.EndOfCandidates)
}

// GoString returns a Go-syntax form with the password redacted.
func (i ICE) GoString() string {
	pwd := `""`
	if i.Pwd != "" {
		pwd = `"` + redacted + `"`
	}
	return fmt.Sprintf("sdp.ICE{Ufrag:%q, Pwd:%s, Options:%#v, Candidates:%#v, EndOfCandidates:%t}",
		i.Ufrag, pwd, i.Options, i.Candidates, i.EndOfCandidates)
}

// LogValue returns the ICE attributes for slog with the password redacted.
func (i ICE) LogValue() slog.Value {
	pwd := ""
	if i.Pwd != "" {
		pwd = redacted
	}
	return slog.GroupValue(
		slog.String("ufrag", i.Ufrag),
		slog.String("pwd", pwd),
		slog.Any("options", i.Options),
		slog.Int("candidates", len(i.Candidates)),
		slog.Bool("end_of_candidates", i.EndOfCandidates),
	)
}

var _ slog.LogValuer = ICE{}

// validUfrag and validPwd apply the lengths of RFC 8839 section 5.4.
func validUfrag(s string) bool { return len(s) >= 4 && len(s) <= 256 && allICEChars(s) }
func validPwd(s string) bool   { return len(s) >= 22 && len(s) <= 256 && allICEChars(s) }

func allICEChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isICEChar(s[i]) {
			return false
		}
	}
	return true
}
