package securecall

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/securecall/securecall/sdp"
)

// TestKeyScheduleSpecSenderIdentities checks that the sender identities a
// Call gives the media session are written as docs/keyschedule.md says:
// the role, a slash and the decimal o= session id.
func TestKeyScheduleSpecSenderIdentities(t *testing.T) {
	data, err := os.ReadFile("docs/keyschedule.md")
	if err != nil {
		t.Fatal(err)
	}
	senders := regexp.MustCompile(`(?m)^sender: (offerer|answerer)/([0-9]+)$`).FindAllSubmatch(data, -1)
	if len(senders) == 0 {
		t.Fatal("the specification's vectors name no sender")
	}
	for _, m := range senders {
		sid, err := strconv.ParseUint(string(m[2]), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		d := &sdp.Description{Origin: sdp.Origin{SessionID: sid}}
		if got, want := senderID(string(m[1]), d), string(m[0][len("sender: "):]); got != want {
			t.Errorf("senderID = %q, the specification says %q", got, want)
		}
	}
}
