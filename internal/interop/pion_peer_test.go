package interop

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	pionice "github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// pionOptions configures a pion/webrtc/v4 endpoint.
type pionOptions struct {
	// Profiles forces the DTLS-SRTP protection profiles; nil keeps pion's.
	Profiles []dtls.SRTPProtectionProfile
	// Interface is the only network interface ICE uses; "" means "lo".
	Interface string
}

// pionEndpoint is a pion/webrtc/v4 PeerConnection with one sendrecv audio
// track, set up the way pion's documentation shows an application doing it:
// default codecs and interceptors, full (non-trickle) descriptions. Its ICE
// is restricted to loopback and mDNS is off, so that it sends nothing
// beyond this machine.
type pionEndpoint struct {
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticSample
	remote chan *webrtc.TrackRemote
	rtrack *webrtc.TrackRemote // set by the first ReadAudio

	connected chan struct{}
	failed    chan struct{}
	once      sync.Once
	failOnce  sync.Once
}

var _ endpoint = (*pionEndpoint)(nil)

func newPionEndpoint(opts pionOptions) (*pionEndpoint, error) {
	var se webrtc.SettingEngine
	ifname := opts.Interface
	if ifname == "" {
		ifname = "lo"
		se.SetIncludeLoopbackCandidate(true)
	}
	se.SetInterfaceFilter(func(name string) bool { return name == ifname })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(pionice.MulticastDNSModeDisabled)
	if opts.Profiles != nil {
		se.SetSRTPProtectionProfiles(opts.Profiles...)
	}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	e := &pionEndpoint{
		pc:        pc,
		remote:    make(chan *webrtc.TrackRemote, 1),
		connected: make(chan struct{}),
		failed:    make(chan struct{}),
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			e.once.Do(func() { close(e.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			e.failOnce.Do(func() { close(e.failed) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		select {
		case e.remote <- tr:
		default:
		}
	})
	e.track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "interop")
	if err != nil {
		pc.Close()
		return nil, err
	}
	return e, nil
}

// addTrack adds the sending track, which must happen before the local
// description is made.
func (e *pionEndpoint) addTrack() error {
	_, err := e.pc.AddTrack(e.track)
	return err
}

// localDescription sets d as the local description and returns it with
// every candidate, once gathering is complete.
func (e *pionEndpoint) localDescription(ctx context.Context, d webrtc.SessionDescription) (string, error) {
	done := webrtc.GatheringCompletePromise(e.pc)
	if err := e.pc.SetLocalDescription(d); err != nil {
		return "", err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return e.pc.LocalDescription().SDP, nil
}

func (e *pionEndpoint) Offer(ctx context.Context) (string, error) {
	if err := e.addTrack(); err != nil {
		return "", err
	}
	offer, err := e.pc.CreateOffer(nil)
	if err != nil {
		return "", err
	}
	return e.localDescription(ctx, offer)
}

func (e *pionEndpoint) Answer(ctx context.Context, offer string) (string, error) {
	if err := e.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("pion SetRemoteDescription(offer): %w", err)
	}
	if err := e.addTrack(); err != nil {
		return "", err
	}
	answer, err := e.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("pion CreateAnswer: %w", err)
	}
	return e.localDescription(ctx, answer)
}

func (e *pionEndpoint) SetAnswer(_ context.Context, answer string) error {
	if err := e.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("pion SetRemoteDescription(answer): %w", err)
	}
	return nil
}

func (e *pionEndpoint) Connect(ctx context.Context) error {
	select {
	case <-e.connected:
		return nil
	case <-e.failed:
		return errors.New("pion: peer connection failed")
	case <-ctx.Done():
		return fmt.Errorf("pion: connect: %w (ICE %s, DTLS %s)", ctx.Err(), e.pc.ICEConnectionState(), e.pc.ConnectionState())
	}
}

// Codec returns the negotiated audio codec's name and payload type.
func (e *pionEndpoint) Codec() (string, uint8) {
	for _, tr := range e.pc.GetTransceivers() {
		if s := tr.Sender(); s != nil {
			if ps := s.GetParameters(); len(ps.Codecs) > 0 {
				c := ps.Codecs[0]
				return strings.TrimPrefix(strings.ToLower(c.MimeType), "audio/"), uint8(c.PayloadType)
			}
		}
	}
	return "", 0
}

// WriteAudio sends one 20 ms frame; pion's track packetizes it with the
// negotiated payload type. The track only carries Opus, so the frame is
// Opus whatever payload says.
func (e *pionEndpoint) WriteAudio(payload []byte) error {
	return e.track.WriteSample(pionmedia.Sample{Data: payload, Duration: 20 * time.Millisecond})
}

// ReadAudio reads the next decrypted RTP packet of the remote audio track.
func (e *pionEndpoint) ReadAudio(ctx context.Context, buf []byte) (uint8, int, error) {
	if e.rtrack == nil {
		select {
		case e.rtrack = <-e.remote:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
	}
	n, _, err := e.rtrack.Read(buf)
	if err != nil {
		return 0, 0, err
	}
	if n < 12 {
		return 0, 0, fmt.Errorf("pion: short RTP packet of %d bytes", n)
	}
	return buf[1] & 0x7f, n, nil
}

func (e *pionEndpoint) Close() error { return e.pc.Close() }
