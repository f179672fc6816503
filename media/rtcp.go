package media

import (
	"encoding/binary"
	"time"
)

// The small RTCP codecs of the session's own reports (RFC 3550 section 6).
// They append to and read from caller-owned buffers, so that building and
// reading a report allocates nothing.

// RTCP packet types (RFC 3550 section 12.1).
const (
	rtcpTypeSR   = 200
	rtcpTypeRR   = 201
	rtcpTypeSDES = 202
	rtcpTypeBYE  = 203
)

// sdesCNAME is the SDES item type of the canonical name.
const sdesCNAME = 1

// reportBlock is one reception report block (RFC 3550 section 6.4.1).
type reportBlock struct {
	ssrc         uint32
	fractionLost uint8  // 1/256 units
	lost         int32  // cumulative, 24-bit signed on the wire
	highestSeq   uint32 // extended highest sequence number received
	jitter       uint32 // RTP timestamp units
	lsr, dlsr    uint32 // 1/65536 s units
}

// senderInfo is the sender information of an SR.
type senderInfo struct {
	ntp                   uint64
	rtpTime               uint32
	packetCount, octetCnt uint32
}

// ntpTime returns t as a 64-bit NTP timestamp (seconds since 1900 in the
// upper half, the fraction in the lower).
func ntpTime(t time.Time) uint64 {
	const ntpEpochOffset = 2208988800 // 1900 to 1970
	ns := t.UnixNano()
	sec := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return sec<<32 | frac
}

// ntpMiddle returns the middle 32 bits of an NTP timestamp, the unit of
// LSR, DLSR and round-trip arithmetic (1/65536 s).
func ntpMiddle(ntp uint64) uint32 { return uint32(ntp >> 16) }

// appendHeader appends an RTCP common header for a packet of n 32-bit
// words after the header; count goes into the five-bit count field.
func appendRTCPHeader(b []byte, count int, pt uint8, words int) []byte {
	b = append(b, 0x80|byte(count&0x1f), pt)
	return binary.BigEndian.AppendUint16(b, uint16(words))
}

func appendReportBlock(b []byte, r reportBlock) []byte {
	b = binary.BigEndian.AppendUint32(b, r.ssrc)
	lost := r.lost
	switch {
	case lost > 0x7fffff:
		lost = 0x7fffff
	case lost < -0x800000:
		lost = -0x800000
	}
	b = binary.BigEndian.AppendUint32(b, uint32(r.fractionLost)<<24|uint32(lost)&0xffffff)
	b = binary.BigEndian.AppendUint32(b, r.highestSeq)
	b = binary.BigEndian.AppendUint32(b, r.jitter)
	b = binary.BigEndian.AppendUint32(b, r.lsr)
	return binary.BigEndian.AppendUint32(b, r.dlsr)
}

// appendSR appends a sender report from ssrc with at most one report block.
func appendSR(b []byte, ssrc uint32, si senderInfo, blocks []reportBlock) []byte {
	b = appendRTCPHeader(b, len(blocks), rtcpTypeSR, 6+6*len(blocks))
	b = binary.BigEndian.AppendUint32(b, ssrc)
	b = binary.BigEndian.AppendUint64(b, si.ntp)
	b = binary.BigEndian.AppendUint32(b, si.rtpTime)
	b = binary.BigEndian.AppendUint32(b, si.packetCount)
	b = binary.BigEndian.AppendUint32(b, si.octetCnt)
	for _, r := range blocks {
		b = appendReportBlock(b, r)
	}
	return b
}

// appendRR appends a receiver report from ssrc.
func appendRR(b []byte, ssrc uint32, blocks []reportBlock) []byte {
	b = appendRTCPHeader(b, len(blocks), rtcpTypeRR, 1+6*len(blocks))
	b = binary.BigEndian.AppendUint32(b, ssrc)
	for _, r := range blocks {
		b = appendReportBlock(b, r)
	}
	return b
}

// appendSDESCNAME appends an SDES packet with one chunk carrying cname
// (at most 255 bytes), padded to a 32-bit boundary with at least one null.
func appendSDESCNAME(b []byte, ssrc uint32, cname string) []byte {
	if len(cname) > 255 {
		cname = cname[:255]
	}
	body := 4 + 2 + len(cname) // SSRC, type, length, text
	pad := 4 - body%4          // 1 to 4 nulls: the end of the item list
	b = appendRTCPHeader(b, 1, rtcpTypeSDES, (body+pad)/4)
	b = binary.BigEndian.AppendUint32(b, ssrc)
	b = append(b, sdesCNAME, byte(len(cname)))
	b = append(b, cname...)
	for range pad {
		b = append(b, 0)
	}
	return b
}

// appendBYE appends a BYE for ssrc with an optional reason (at most 255
// bytes).
func appendBYE(b []byte, ssrc uint32, reason string) []byte {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	words := 1
	pad := 0
	if reason != "" {
		n := 1 + len(reason)
		pad = (4 - n%4) % 4
		words += (n + pad) / 4
	}
	b = appendRTCPHeader(b, 1, rtcpTypeBYE, words)
	b = binary.BigEndian.AppendUint32(b, ssrc)
	if reason != "" {
		b = append(b, byte(len(reason)))
		b = append(b, reason...)
		for range pad {
			b = append(b, 0)
		}
	}
	return b
}

// rtcpPacket is one packet of a compound RTCP packet, as walkRTCP sees it.
type rtcpPacket struct {
	pt    uint8
	count int
	body  []byte // after the 4-byte header, without padding
}

// walkRTCP calls fn for each packet of the compound packet b, stopping at
// the first malformed one (RFC 3550 section 6.1 and appendix A.2 checks:
// version 2, lengths that add up). It reports whether the whole compound
// packet was well formed.
func walkRTCP(b []byte, fn func(rtcpPacket)) bool {
	for len(b) > 0 {
		if len(b) < 4 || b[0]>>6 != 2 {
			return false
		}
		n := 4 * (int(binary.BigEndian.Uint16(b[2:])) + 1)
		if n > len(b) {
			return false
		}
		body := b[4:n]
		if b[0]&0x20 != 0 { // padding, only legal on the last packet
			if n != len(b) || len(body) == 0 {
				return false
			}
			p := int(body[len(body)-1])
			if p == 0 || p > len(body) {
				return false
			}
			body = body[:len(body)-p]
		}
		fn(rtcpPacket{pt: b[1], count: int(b[0] & 0x1f), body: body})
		b = b[n:]
	}
	return true
}

// parseReportBlock reads one report block from b (24 bytes).
func parseReportBlock(b []byte) reportBlock {
	w := binary.BigEndian.Uint32(b[4:])
	lost := int32(w&0xffffff) << 8 >> 8 // sign-extend 24 bits
	return reportBlock{
		ssrc:         binary.BigEndian.Uint32(b),
		fractionLost: uint8(w >> 24),
		lost:         lost,
		highestSeq:   binary.BigEndian.Uint32(b[8:]),
		jitter:       binary.BigEndian.Uint32(b[12:]),
		lsr:          binary.BigEndian.Uint32(b[16:]),
		dlsr:         binary.BigEndian.Uint32(b[20:]),
	}
}
