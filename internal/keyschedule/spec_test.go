package keyschedule

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
)

// specPath is the specification whose vectors this test checks.
const specPath = "../../docs/keyschedule.md"

// SpecBlocks returns the fenced blocks of kind ("vector", "packet") in the
// specification, each as its "name: value" fields.
func specBlocks(t *testing.T, kind string) []map[string]string {
	t.Helper()
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("the specification must be readable: %v", err)
	}
	var blocks []map[string]string
	var cur map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && line == "```"+kind:
			cur = map[string]string{}
		case cur != nil && line == "```":
			blocks = append(blocks, cur)
			cur = nil
		case cur != nil:
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				t.Fatalf("bad line in a %s block: %q", kind, line)
			}
			cur[k] = v
		}
	}
	if cur != nil {
		t.Fatalf("unterminated %s block", kind)
	}
	return blocks
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	if s == "(none)" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// TestSpecificationVectors derives every vector of docs/keyschedule.md and
// compares the info string, master key, master salt and MKI with the text.
func TestSpecificationVectors(t *testing.T) {
	blocks := specBlocks(t, "vector")
	if len(blocks) < 6 {
		t.Fatalf("the specification has %d vectors, want at least 6", len(blocks))
	}
	lengths := map[uint16][2]int{1: {16, 14}, 2: {16, 14}, 7: {16, 12}, 8: {32, 12}}
	for _, v := range blocks {
		t.Run(v["name"], func(t *testing.T) {
			var mode Mode
			switch v["mode"] {
			case "kms (1)":
				mode = KMS
			case "hybrid (2)":
				mode = Hybrid
			default:
				t.Fatalf("mode %q", v["mode"])
			}
			version, err := strconv.ParseUint(v["version"], 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			profile, err := strconv.ParseUint(strings.TrimPrefix(v["profile"], "0x"), 16, 16)
			if err != nil {
				t.Fatal(err)
			}
			l, ok := lengths[uint16(profile)]
			if !ok {
				t.Fatalf("profile %s", v["profile"])
			}
			in := Input{Mode: mode, CallKey: unhex(t, v["call-key"]), Exporter: unhex(t, v["exporter"]), CallID: v["call-id"],
				Sender: v["sender"], Version: uint32(version), Profile: uint16(profile), KeyLen: l[0], SaltLen: l[1]}
			if got := hex.EncodeToString(infoString(in)); got != v["info"] {
				t.Errorf("info = %s, the specification says %s", got, v["info"])
			}
			key, salt, err := Derive(in)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(key); got != v["master-key"] {
				t.Errorf("master key = %s, the specification says %s", got, v["master-key"])
			}
			if got := hex.EncodeToString(salt); got != v["master-salt"] {
				t.Errorf("master salt = %s, the specification says %s", got, v["master-salt"])
			}
			if want := strconv.FormatUint(version, 16); strings.TrimLeft(v["mki"], "0") != want || len(v["mki"]) != 8 {
				t.Errorf("mki %s is not the 4-byte big-endian version %d", v["mki"], version)
			}
		})
	}
}
