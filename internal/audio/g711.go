package audio

import "math/bits"

// G.711 µ-law (ITU-T G.711, section 3): 14-bit linear samples companded to
// 8 bits in eight segments. The bias shifts every segment boundary to a power
// of two so that the segment is the position of the highest set bit.
const (
	ulawBias = 0x84
	ulawClip = 32635
)

// EncodeULaw returns the µ-law byte for a 16-bit linear sample.
func EncodeULaw(sample int16) byte {
	s := int32(sample)
	var sign byte
	if s < 0 {
		sign = 0x80
		s = -s
	}
	if s > ulawClip {
		s = ulawClip
	}
	s += ulawBias
	exponent := bits.Len32(uint32(s>>7)) - 1
	mantissa := byte(s>>(exponent+3)) & 0x0f
	return ^(sign | byte(exponent)<<4 | mantissa)
}

// DecodeULaw returns the 16-bit linear sample for a µ-law byte.
func DecodeULaw(u byte) int16 {
	u = ^u
	exponent := (u >> 4) & 0x07
	mantissa := int32(u & 0x0f)
	s := ((mantissa << 3) + ulawBias) << exponent
	s -= ulawBias
	if u&0x80 != 0 {
		s = -s
	}
	return int16(s)
}
