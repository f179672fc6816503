package media

import (
	"encoding/binary"
	"testing"
	"time"
)

// A round trip shorter than the report fields' resolution (1/65536 s,
// about 15 µs: loopback on a fast machine) is still a measured RTT: it
// must not read as zero, which means "not measured yet".
func TestRTTBelowResolution(t *testing.T) {
	var q reports
	q.cfg = &RTCPConfig{ClockRate: 8000}
	now := time.Now()
	b := make([]byte, 24)
	binary.BigEndian.PutUint32(b[0:], 7)
	binary.BigEndian.PutUint32(b[16:], ntpMiddle(ntpTime(now))) // LSR: sent just now
	binary.BigEndian.PutUint32(b[20:], 0)                       // DLSR: answered at once
	q.blocks(b, 1, now, 7)
	const unit = time.Second / 65536
	if q.rtt <= 0 || q.rtt > unit {
		t.Fatalf("RTT of a round trip below the resolution: %v, want (0, %v]", q.rtt, unit)
	}
}
