package sdp

import (
	"strconv"
	"strings"
	"testing"
)

func BenchmarkUnmarshalChromeOffer(b *testing.B) {
	data := readTestdata(b, "chrome_offer.txt")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalChromeOffer(b *testing.B) {
	d, err := Unmarshal(readTestdata(b, "chrome_offer.txt"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalMaxSize measures the worst case the size cap allows:
// a description of MaxSize bytes, mostly candidate lines.
func BenchmarkUnmarshalMaxSize(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(minimal)
	for i := 0; ; i++ {
		line := "a=candidate:" + strconv.Itoa(i) + " 1 udp 2130706431 192.0.2.1 " + strconv.Itoa(1000+i%60000) + " typ host generation 0\r\n"
		if sb.Len()+len(line) > MaxSize {
			break
		}
		sb.WriteString(line)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNegotiate(b *testing.B) {
	offer, err := Unmarshal(readTestdata(b, "chrome_offer.txt"))
	if err != nil {
		b.Fatal(err)
	}
	c := caps(KeyingDTLS)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := NewAnswer(offer, c); err != nil {
			b.Fatal(err)
		}
	}
}
