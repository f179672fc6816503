package securecall

import (
	"fmt"
	"strconv"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// cname is the RTCP canonical name the call announces in its description
// and its reports.
func (c *Call) cname() string {
	if c.cfg.RTCP.CNAME != "" {
		return c.cfg.RTCP.CNAME
	}
	return "securecall-" + strconv.FormatUint(uint64(c.ssrc), 16)
}

// rtcpConfig is the media session's RTCP configuration: the application's,
// with the call's SSRC, CNAME and negotiated codec filled in.
func (c *Call) rtcpConfig(a sdp.Agreement) media.RTCPConfig {
	rc := c.cfg.RTCP
	if rc.SSRC == 0 {
		rc.SSRC = c.ssrc
	}
	rc.CNAME = c.cname()
	if len(a.Codecs) > 0 {
		if rc.ClockRate == 0 {
			rc.ClockRate = a.Codecs[0].ClockRate
		}
		if rc.Codec == "" {
			rc.Codec = a.Codecs[0].Name
		}
	}
	return rc
}

// path is Path with the RTT refreshed from RTCP.
func (c *Call) path() ice.Path {
	p := c.transportPath()
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s != nil {
		refreshRTT(&p, s.Stats().Quality.RTT)
	}
	return p
}

// refreshRTT puts the RTCP round trip into p once there is one: while
// media flows ICE on its own sockets sends no consent checks, and an
// Endpoint's consent does not report its RTT, so the check's RTT would
// stay the set-up value.
func refreshRTT(p *ice.Path, rtcpRTT time.Duration) {
	if rtcpRTT > 0 && p.Local.Type != "" {
		p.RTT = rtcpRTT
	}
}

// WriteSample sends one frame of the negotiated codec: payload is the
// encoded frame and duration the time it lasts (20 ms for a usual audio
// frame). The Call numbers the packets from a random sequence number,
// advances the timestamp at the codec's clock rate from a random start,
// uses the SSRC it announced (SSRC) and the negotiated payload type, and
// marks the first packet. Use either WriteSample or WriteRTP for the
// call's SSRC, not both. While the agreed direction does not let this end
// send ([Call.Direction]), it sends nothing, counts the frame in
// Stats.RTPWithheld, advances the timestamp as SkipSample does and
// returns nil. After a switch to another codec it sends with the new
// payload type.
func (c *Call) WriteSample(payload []byte, duration time.Duration) error {
	w, err := c.sampleWriter()
	if err != nil {
		return err
	}
	if duration >= 0 && c.withhold() {
		// A bad duration fails as it does off hold (in the writer).
		w.Skip(duration)
		return nil
	}
	return w.WriteSample(payload, duration)
}

// SkipSample advances the timestamp by duration without sending, for
// silence that is not transmitted; the next WriteSample starts a new
// talkspurt (marker bit).
func (c *Call) SkipSample(duration time.Duration) error {
	w, err := c.sampleWriter()
	if err != nil {
		return err
	}
	w.Skip(duration)
	return nil
}

func (c *Call) sampleWriter() (*media.SampleWriter, error) {
	s, err := c.media()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil {
		codec := sdp.Format{PayloadType: 0, ClockRate: 8000}
		if len(c.agreement.Codecs) > 0 {
			codec = c.agreement.Codecs[0]
		}
		w, err := s.NewSampleWriter(codec.PayloadType, codec.ClockRate, c.ssrc)
		if err != nil {
			return nil, fmt.Errorf("securecall: WriteSample: %w", err)
		}
		c.samples = w
	}
	return c.samples, nil
}
