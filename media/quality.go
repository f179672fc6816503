package media

import (
	"math"
	"strings"
	"time"
)

// Defaults of RTCPConfig fields; a test checks the documentation against
// them.
const (
	// DefaultRTCPInterval is the minimum report interval (RFC 3550
	// section 6.2's Tmin) before randomisation.
	DefaultRTCPInterval = 5 * time.Second
	// DefaultSessionBandwidth is the session bandwidth, in bits per second,
	// that scales the report interval: two audio senders at 64 kbit/s.
	DefaultSessionBandwidth = 128_000
	// DefaultClockRate is the RTP clock rate assumed for jitter and sender
	// report timestamps: Opus's.
	DefaultClockRate = 48_000
	// DefaultFrameDuration is the packetization delay the quality estimate
	// assumes.
	DefaultFrameDuration = 20 * time.Millisecond
)

// RTCPConfig configures the RTCP reports a session sends and reads
// itself, and the receive statistics and quality estimate in
// [Stats.Quality]. The zero value is valid: reports on, at the RFC 3550
// interval for a 128 kbit/s session, random SSRC and CNAME, Opus.
type RTCPConfig struct {
	// Disabled stops the session from sending reports and the BYE on
	// Close, for an application that writes all its RTCP itself.
	// Received reports are still read and receive statistics still kept.
	// If zero (false), the session sends them.
	Disabled bool

	// Interval is the minimum report interval (Tmin of RFC 3550 section
	// 6.2); each actual interval is randomised to between 0.5 and 1.5
	// times the computed one and divided by e-3/2 as section 6.3.1 asks,
	// and the first report goes out after half of it. If zero, defaults
	// to DefaultRTCPInterval (5 s).
	Interval time.Duration

	// Bandwidth is the session bandwidth in bits per second; reports use
	// 5% of it (RFC 3550 section 6.2), so that a low bandwidth stretches
	// the interval beyond Interval. If zero, defaults to
	// DefaultSessionBandwidth (128 kbit/s).
	Bandwidth int

	// SSRC is the source this side reports from before it has sent RTP;
	// after that the reports carry the SSRC of the RTP it sends. If zero,
	// a random one.
	SSRC uint32

	// CNAME is the canonical name sent in every report's SDES. If empty,
	// a random one.
	CNAME string

	// ClockRate is the RTP clock rate of the streams, in Hz, used for
	// jitter and the sender report's RTP timestamp. If zero, defaults to
	// DefaultClockRate (48000, Opus).
	ClockRate uint32

	// Codec is the encoding name of the received stream (such as "opus",
	// "PCMU"), which selects the codec values of the quality estimate. If
	// empty, Opus's are used. [Session.SetCodec] changes it later.
	Codec string

	// FrameDuration is the packetization interval the quality estimate
	// counts as delay. If zero, defaults to DefaultFrameDuration (20 ms).
	FrameDuration time.Duration

	// OnBye, if set, is called once when the peer's BYE arrives, with its
	// reason (often empty). It runs on the goroutine that read the packet
	// (a ReadRTP or ReadRTCP caller); with Config.OnRTP set, on the
	// goroutine that delivers the datagram (see Config.OnRTP). It must not
	// block. Close waits for a call in progress to return, and it is not
	// called once Close has returned, so it must not call Close (start a
	// goroutine to do that).
	OnBye func(reason string)
}

// Quality is the receive quality of a session from RTCP's point of view:
// what this side measures of the stream it receives, what the peer reports
// of the stream this side sends, and the round trip between them.
type Quality struct {
	// Receive is this side's view of the stream it receives.
	Receive ReceiveStats
	// Remote is the peer's view of the stream this side sends, from the
	// last report block about it; zero until one arrives.
	Remote RemoteReport
	// RTT is the round-trip time from the last report block that answered
	// one of this side's sender reports (RFC 3550 section 6.4.1, LSR and
	// DLSR); zero until measured. Its resolution is 1/65536 s: a shorter
	// round trip reads as that, about 15 µs. Only a side that sends RTP
	// gets it.
	RTT time.Duration
	// RFactor and MOS estimate the listening quality of the received
	// stream so far (its cumulative loss, current jitter and RTT) with a
	// simplified ITU-T G.107 E-model (see the package documentation);
	// zero until the first packet arrives. MOS runs from
	// 1 (bad) to 4.41, the best that narrowband telephony scores.
	RFactor, MOS float64
	// ReportsSent and ReportsReceived count the compound RTCP reports the
	// session built itself and those that arrived (its own or the
	// application's, whichever carried a report).
	ReportsSent, ReportsReceived uint64
	// PeerBye is set once the peer's RTCP BYE arrived; ByeReason is its
	// reason, if any.
	PeerBye   bool
	ByeReason string
}

// ReceiveStats are the RFC 3550 receive statistics of the stream from one
// remote source (appendix A.1, A.3, A.8).
type ReceiveStats struct {
	// SSRC is the source received from; zero before the first packet.
	SSRC uint32
	// Expected is the number of packets the sequence numbers say were
	// sent since the first one; Received those that arrived and were
	// accepted (authenticated, once each); Lost is Expected - Received.
	Expected, Received uint64
	Lost               int64
	// FractionLost is the share of expected packets lost in the interval
	// before the last report this side made (A.3), or over the whole
	// stream before the first; 0 to 1.
	FractionLost float64
	// Reordered counts packets accepted after a later-numbered one: they
	// are received, not lost. Duplicates counts copies of packets already
	// accepted, Late those that came after the replay window had moved
	// past them (more than 128 packets behind the newest): both are
	// dropped by SRTP as replays before authentication, so an attacker on
	// the path can add to them, and a late packet stays counted as lost.
	Reordered, Duplicates, Late uint64
	// Jitter is the interarrival jitter (A.8).
	Jitter time.Duration
}

// RemoteReport is what the peer reported of the stream this side sends.
type RemoteReport struct {
	// At is when the report arrived; zero when none has.
	At time.Time
	// FractionLost is the peer's loss fraction for its last interval,
	// 0 to 1 in steps of 1/256; Lost its cumulative count.
	FractionLost float64
	Lost         int64
	// HighestSequence is the extended highest sequence number it received.
	HighestSequence uint32
	// Jitter is the interarrival jitter it measured.
	Jitter time.Duration
	// RFactor and MOS estimate what the peer hears, from its last
	// interval's loss and its jitter and this side's RTT, with the same
	// model as Quality's.
	RFactor, MOS float64
}

// resolve applies the defaults.
func (c RTCPConfig) resolve() RTCPConfig {
	if c.Interval == 0 {
		c.Interval = DefaultRTCPInterval
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = DefaultSessionBandwidth
	}
	if c.ClockRate == 0 {
		c.ClockRate = DefaultClockRate
	}
	if c.FrameDuration == 0 {
		c.FrameDuration = DefaultFrameDuration
	}
	return c
}

// codecImpairment returns the equipment impairment factor Ie and the
// packet-loss robustness factor Bpl for a codec (ITU-T G.113 appendix I).
func codecImpairment(codec string) (ie, bpl float64) {
	switch strings.ToUpper(codec) {
	case "PCMU", "PCMA", "G711":
		// G.711 with the packet loss concealment of its appendix I.
		return 0, 25.1
	case "G729":
		return 11, 19.0
	case "G722":
		// G.722 rated on the narrowband scale, with concealment, as G.711.
		return 0, 25.1
	default:
		// Opus and anything unlisted: G.113 has no narrowband value for
		// Opus; it is rated like G.711 with concealment, which
		// understates its wideband quality but not its loss behaviour
		// at the rates calls use.
		return 0, 25.1
	}
}

// eModel returns the R-factor and MOS for a loss fraction (0 to 1) and a
// one-way mouth-to-ear delay, with the G.107 defaults for every other
// parameter, random loss (BurstR 1) and no echo impairments.
func eModel(codec string, loss float64, delay time.Duration) (r, mos float64) {
	ie, bpl := codecImpairment(codec)
	ppl := 100 * min(max(loss, 0), 1)
	ieEff := ie + (95-ie)*ppl/(ppl+bpl)
	r = 93.2 - delayImpairment(delay) - ieEff
	return r, mosFromR(r)
}

// delayImpairment is G.107's Idd for a mouth-to-ear delay Ta.
func delayImpairment(d time.Duration) float64 {
	ta := float64(d) / float64(time.Millisecond)
	if ta <= 100 {
		return 0
	}
	x := math.Log10(ta/100) / math.Log10(2)
	return 25 * (math.Pow(1+math.Pow(x, 6), 1.0/6) - 3*math.Pow(1+math.Pow(x/3, 6), 1.0/6) + 2)
}

// mosFromR is G.107 annex B's conversion.
func mosFromR(r float64) float64 {
	switch {
	case r <= 0:
		return 1
	case r >= 100:
		return 4.5
	}
	return 1 + 0.035*r + r*(r-60)*(100-r)*7e-6
}
