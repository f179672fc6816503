package media

import (
	"testing"
)

// FuzzReadPath feeds arbitrary datagrams to a keyed session's receive path,
// as ReadRTP and ReadRTCP run it: demultiplexing, SRTP/SRTCP unprotection,
// queueing and header parsing. Nothing may panic, and nothing unauthentic
// may come out.
func FuzzReadPath(f *testing.F) {
	for _, mki := range []bool{true, false} {
		s, _ := benchSessions(f, ProfileAEADAES128GCM, mki)
		s.sendMu.Lock()
		out, err := s.protectRTPLocked(new(outBuf)[:0], &RTPHeader{SSRC: 1, CSRC: []uint32{2}, ExtensionProfile: 0xBEDE, Extension: []byte{0x10, 1, 0, 0}}, []byte("hello"))
		s.sendMu.Unlock()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte(nil), out...))
	}
	f.Add([]byte{0x80, 200, 0, 1, 0, 0, 0, 1, 0xde, 0xad})
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1})
	f.Add([]byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff})
	_, kmsRecv := benchSessions(f, ProfileAEADAES128GCM, true)
	_, sdesRecv := benchSessions(f, ProfileAES128CMHMACSHA1_80, false)
	f.Fuzz(func(t *testing.T, raw []byte) {
		hasApplicationData(raw)
		for _, r := range []*Session{kmsRecv, sdesRecv} {
			before := r.Stats()
			for _, want := range []packetKind{kindRTP, kindRTCP} {
				if pkt, ok := r.handle(raw, want); ok {
					t.Fatalf("forged datagram %x authenticated as %x", raw, pkt)
				}
			}
			select {
			case b := <-r.rtpQ:
				t.Fatalf("forged datagram queued: %x", b.data)
			case b := <-r.rtcpQ:
				t.Fatalf("forged datagram queued: %x", b.data)
			default:
			}
			if after := r.Stats(); after.RTPPacketsReceived != before.RTPPacketsReceived {
				t.Fatal("counted as received")
			}
		}
	})
}

// FuzzParseRTP checks the header parser that runs on every authenticated
// packet: it never panics and never returns a payload outside the packet.
func FuzzParseRTP(f *testing.F) {
	h := RTPHeader{PayloadType: 96, SSRC: 9, CSRC: []uint32{1, 2}, ExtensionProfile: 0x1000, Extension: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	f.Add(append(h.appendTo(nil), 1, 2, 3))
	f.Add([]byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var (
			h     RTPHeader
			lists *headerLists
		)
		payload, err := parseRTP(pkt, &h, &lists)
		if err != nil {
			return
		}
		if len(payload) > len(pkt)-rtpFixedLen {
			t.Fatalf("payload of %d bytes from a %d-byte packet", len(payload), len(pkt))
		}
		// What parses re-marshals to the same header bytes.
		again := h.appendTo(nil)
		if len(again) > len(pkt) || string(again[1:]) != string(pkt[1:len(again)]) {
			t.Fatalf("header %+v does not round-trip: %x vs %x", h, again, pkt[:min(len(pkt), len(again))])
		}
	})
}
