package sdp

import (
	"errors"
	"fmt"
)

// ErrNegotiation is wrapped by every error that [NewAnswer],
// [AcceptAnswer] and [Description.Keying] return when an offer, an answer
// and the local capabilities have nothing acceptable in common: no common
// codec, a keying mismatch, a missing fingerprint, a bad setup role, no
// common SDES suite. Callers branch on it with errors.Is to reject an
// offer, as opposed to failing on malformed text (a [*ParseError]) or on
// incomplete local capabilities.
var ErrNegotiation = errors.New("sdp: negotiation failed")

// ParseError reports malformed session description text. Line is the
// 1-based line number in the input (0 when the error is not tied to a line,
// as for a candidate parsed on its own), Text is that line as received,
// truncated to a readable length and with SDES keys, ICE passwords and
// "k=" values redacted, and Reason says what is wrong with it.
type ParseError struct {
	Line   int
	Text   string
	Reason string
}

// Error returns the reason with the line number and text when known.
func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("sdp: line %d %q: %s", e.Line, e.Text, e.Reason)
	}
	if e.Text != "" {
		return fmt.Sprintf("sdp: %q: %s", e.Text, e.Reason)
	}
	return "sdp: " + e.Reason
}

// maxQuotedText bounds how much of a bad line an error repeats, so that an
// error built from hostile input stays readable and small.
const maxQuotedText = 80

func quoteText(s string) string {
	if len(s) > maxQuotedText {
		return s[:maxQuotedText] + "..."
	}
	return s
}
