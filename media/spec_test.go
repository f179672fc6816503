package media

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pion/srtp/v3"
)

// The key schedule's specification, docs/keyschedule.md, gives the MKI
// encoding, the key and salt lengths per profile and a protected packet;
// these tests check the session's side of it (internal/keyschedule checks
// the derivation).

const keySchedulePath = "../docs/keyschedule.md"

func readKeySchedule(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(keySchedulePath)
	if err != nil {
		t.Fatalf("the key schedule specification must be readable: %v", err)
	}
	return data
}

// fencedFields returns the "name: value" fields of the fenced blocks of kind.
func fencedFields(t *testing.T, data []byte, kind string) []map[string]string {
	t.Helper()
	var out []map[string]string
	var cur map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && line == "```"+kind:
			cur = map[string]string{}
		case cur != nil && line == "```":
			out = append(out, cur)
			cur = nil
		case cur != nil:
			k, v, _ := strings.Cut(line, ": ")
			cur[k] = v
		}
	}
	return out
}

func TestKeyScheduleSpecProfiles(t *testing.T) {
	data := readKeySchedule(t)
	seen := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 9 || !strings.HasPrefix(strings.TrimSpace(f[2]), "0x") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(f[2]), "0x"), 16, 16)
		if err != nil {
			t.Fatal(err)
		}
		p := Profile(id)
		num := func(i int) int {
			n, err := strconv.Atoi(strings.TrimSpace(f[i]))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return n
		}
		if p.String() != strings.TrimSpace(f[1]) || !p.valid() {
			t.Errorf("profile 0x%04x is %s here, %s in the specification", id, p, strings.TrimSpace(f[1]))
		}
		if p.keyLen() != num(3) || p.saltLen() != num(4) || p.keyLen()+p.saltLen() != num(5) {
			t.Errorf("%s: key %d salt %d here, the specification says %d and %d", p, p.keyLen(), p.saltLen(), num(3), num(4))
		}
		tag := p.rtpTrailerLen()
		if tag == 0 {
			tag = p.overhead()
		}
		rtcpTag := p.rtcpTrailerLen()
		if rtcpTag == 0 {
			rtcpTag = p.overhead()
		}
		if tag != num(6) || rtcpTag != num(7) {
			t.Errorf("%s: tags %d/%d here, the specification says %d/%d", p, tag, rtcpTag, num(6), num(7))
		}
		seen++
	}
	if seen != 4 {
		t.Fatalf("found %d profile rows in the specification, want 4", seen)
	}
}

func TestKeyScheduleSpecMKIAndPacket(t *testing.T) {
	data := readKeySchedule(t)
	vectors := map[string]map[string]string{}
	for _, v := range fencedFields(t, data, "vector") {
		version, err := strconv.ParseUint(v["version"], 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(versionMKI(uint32(version))); got != v["mki"] {
			t.Errorf("%s: MKI of version %d is %s, the specification says %s", v["name"], version, got, v["mki"])
		}
		vectors[v["name"]] = v
	}
	packets := fencedFields(t, data, "packet")
	if len(packets) == 0 {
		t.Fatal("the specification has no packet vector")
	}
	for _, p := range packets {
		v, ok := vectors[p["name"]]
		if !ok {
			t.Fatalf("packet vector %q names no key vector", p["name"])
		}
		key, _ := hex.DecodeString(v["master-key"])
		salt, _ := hex.DecodeString(v["master-salt"])
		version, _ := strconv.ParseUint(v["version"], 10, 32)
		id, _ := strconv.ParseUint(strings.TrimPrefix(v["profile"], "0x"), 16, 16)
		ctx, err := srtp.CreateContext(key, salt, Profile(id).srtp(), sendOptions(versionMKI(uint32(version)))...)
		if err != nil {
			t.Fatal(err)
		}
		rtp, _ := hex.DecodeString(p["rtp"])
		out, err := ctx.EncryptRTP(nil, rtp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(out); got != p["srtp"] {
			t.Errorf("%s: SRTP packet\n got %s\nwant %s (the specification)", p["name"], got, p["srtp"])
		}
	}
}
