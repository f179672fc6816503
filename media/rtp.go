package media

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxPacketSize is the largest datagram a session sends or accepts: an
// Ethernet MTU. WriteRTP refuses headers and payloads that would not fit
// once protected.
const MaxPacketSize = 1500

// RTPHeader is the header of an RTP packet (RFC 3550 section 5.1). The
// session sets the version; padding is removed on receipt and never added.
type RTPHeader struct {
	// Marker is the M bit (for audio, the first packet of a talkspurt).
	Marker bool
	// PayloadType is the payload type, 0 to 127.
	PayloadType uint8
	// SequenceNumber, Timestamp and SSRC are as in RFC 3550.
	SequenceNumber uint16
	Timestamp      uint32
	SSRC           uint32
	// CSRC lists the contributing sources, at most 15.
	CSRC []uint32
	// ExtensionProfile is the 16-bit profile of the header extension:
	// 0xBEDE for RFC 8285 one-byte and 0x1000 to 0x100F for two-byte
	// elements. It is meaningful only when Extension is not nil.
	ExtensionProfile uint16
	// Extension is the header extension's body (without its 4-byte
	// profile and length word), a multiple of 4 bytes. Browsers send
	// RFC 8285 elements here (audio level, transport-wide sequence number).
	// A nil Extension means the packet has none.
	//
	// In a header returned by ReadRTP, CSRC and Extension refer to storage
	// that the next ReadRTP call reuses: copy them to keep them.
	Extension []byte
}

// rtpFixedLen is the size of the fixed RTP header.
const rtpFixedLen = 12

// marshalledLen returns the header's size on the wire.
func (h *RTPHeader) marshalledLen() int {
	n := rtpFixedLen + 4*len(h.CSRC)
	if h.Extension != nil {
		n += 4 + len(h.Extension)
	}
	return n
}

// check reports why h cannot be sent, or nil.
func (h *RTPHeader) check() error {
	switch {
	case h.PayloadType > 127:
		return fmt.Errorf("media: payload type %d out of range 0..127", h.PayloadType)
	case len(h.CSRC) > 15:
		return fmt.Errorf("media: %d CSRCs, at most 15", len(h.CSRC))
	case len(h.Extension)%4 != 0:
		return fmt.Errorf("media: header extension of %d bytes is not a multiple of 4", len(h.Extension))
	case len(h.Extension) > 4*0xffff:
		return errors.New("media: header extension too long")
	}
	return nil
}

// appendTo appends the header's wire form to b.
func (h *RTPHeader) appendTo(b []byte) []byte {
	first := byte(0x80) | byte(len(h.CSRC))
	if h.Extension != nil {
		first |= 0x10
	}
	second := h.PayloadType
	if h.Marker {
		second |= 0x80
	}
	b = append(b, first, second)
	b = binary.BigEndian.AppendUint16(b, h.SequenceNumber)
	b = binary.BigEndian.AppendUint32(b, h.Timestamp)
	b = binary.BigEndian.AppendUint32(b, h.SSRC)
	for _, c := range h.CSRC {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	if h.Extension != nil {
		b = binary.BigEndian.AppendUint16(b, h.ExtensionProfile)
		b = binary.BigEndian.AppendUint16(b, uint16(len(h.Extension)/4))
		b = append(b, h.Extension...)
	}
	return b
}

var errBadRTP = errors.New("media: malformed RTP packet")

// headerLists is where the CSRC list and the extension of the last header
// ReadRTP or OnRTP gave out are kept. A session makes it for the first
// packet that carries either, so that one whose peer sends neither (a SIP
// phone, a gateway) spends no memory on them.
type headerLists struct {
	csrc [15]uint32
	ext  []byte
}

// headerListsOf returns *lists, made first if it is nil.
func headerListsOf(lists **headerLists) *headerLists {
	if *lists == nil {
		*lists = new(headerLists)
	}
	return *lists
}

// parseRTP parses a plaintext RTP packet into h, using *lists (made when
// first needed) as storage for the header's lists, and returns the payload
// without padding.
func parseRTP(pkt []byte, h *RTPHeader, lists **headerLists) (payload []byte, err error) {
	if len(pkt) < rtpFixedLen || pkt[0]>>6 != 2 {
		return nil, errBadRTP
	}
	cc := int(pkt[0] & 0x0f)
	n := rtpFixedLen + 4*cc
	if len(pkt) < n {
		return nil, errBadRTP
	}
	h.Marker = pkt[1]&0x80 != 0
	h.PayloadType = pkt[1] & 0x7f
	h.SequenceNumber = binary.BigEndian.Uint16(pkt[2:])
	h.Timestamp = binary.BigEndian.Uint32(pkt[4:])
	h.SSRC = binary.BigEndian.Uint32(pkt[8:])
	h.CSRC = nil
	if cc > 0 {
		csrc := &headerListsOf(lists).csrc
		for i := range cc {
			csrc[i] = binary.BigEndian.Uint32(pkt[rtpFixedLen+4*i:])
		}
		h.CSRC = csrc[:cc:cc]
	}
	h.ExtensionProfile, h.Extension = 0, nil
	if pkt[0]&0x10 != 0 {
		if len(pkt) < n+4 {
			return nil, errBadRTP
		}
		profile := binary.BigEndian.Uint16(pkt[n:])
		l := 4 * int(binary.BigEndian.Uint16(pkt[n+2:]))
		n += 4
		if len(pkt) < n+l {
			return nil, errBadRTP
		}
		ext := &headerListsOf(lists).ext
		*ext = append((*ext)[:0], pkt[n:n+l]...)
		h.ExtensionProfile, h.Extension = profile, *ext
		n += l
	}
	end := len(pkt)
	if pkt[0]&0x20 != 0 {
		pad := int(pkt[end-1])
		if pad == 0 || end-pad < n {
			return nil, errBadRTP
		}
		end -= pad
	}
	return pkt[n:end], nil
}
