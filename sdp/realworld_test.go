package sdp

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readTestdata returns a description from testdata with CRLF line endings,
// as it travels on the wire.
func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.ReplaceAll(string(b), "\n", "\r\n"))
}

func TestRealWorldParse(t *testing.T) {
	for _, name := range []string{"chrome_offer.txt", "firefox_offer.txt", "sip_sdes_offer.txt", "lite_border_offer.txt"} {
		t.Run(name, func(t *testing.T) {
			d, err := Unmarshal(readTestdata(t, name))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", d)
		})
	}
}

func isNegotiation(err error) bool { return errors.Is(err, ErrNegotiation) }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
