package securecall

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// Call is one end of a secure call. Make it with New, exchange session
// descriptions with Offer, Answer and SetAnswer over the application's own
// signaling, wait for Connect, then carry media with WriteRTP and ReadRTP.
//
// The methods of a Call may be called from any goroutine. ReadRTP and
// ReadRTCP may each be used by one goroutine while others write.
type Call struct {
	cfg   Config // a copy, with defaults applied
	log   *slog.Logger
	ice   *ice.Transport
	cert  tls.Certificate
	print sdp.Fingerprint
	ssrc  uint32
	sid   uint64

	ctx    context.Context
	cancel context.CancelCauseFunc
	ready  chan struct{} // closed when the connect attempt has finished
	wg     sync.WaitGroup
	cbMu   sync.Mutex // serializes OnStateChange calls

	mu         sync.Mutex
	state      State
	keying     sdp.Keying
	offer      *sdp.Description // the local offer, while an answer is awaited
	restarting bool             // offer is an ICE restart of a started call
	keyURI     string           // the call's key resource, once started
	remoteSID  uint64           // the peer's session id, once started
	version    uint64           // the origin version of this end's last description
	agreement  sdp.Agreement
	started    bool // the connect goroutine has been started
	session    *media.Session
	connectErr error
	gathering  bool
	closed     bool
	sip        sipState // peers without ICE (call_sip.go)
}

// New makes a Call from cfg. It checks cfg and prepares the call without
// any network I/O; a DTLS certificate is generated if cfg has none and the
// keying needs one.
func New(cfg Config) (*Call, error) {
	c := &Call{cfg: cfg, ready: make(chan struct{})}
	c.log = cfg.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.keying = cfg.Keying
	if c.keying == "" {
		c.keying = sdp.KeyingDTLS
		if cfg.KeySource != nil {
			c.keying = sdp.KeyingHybrid
		}
	}
	switch c.keying {
	case sdp.KeyingDTLS:
	case sdp.KeyingKMS, sdp.KeyingHybrid:
		if cfg.KeySource == nil {
			return nil, fmt.Errorf("securecall: %s keying needs a KeySource", c.keying)
		}
	case sdp.KeyingSDES:
		// Only when asked for: the keys travel in the signaling (see
		// Config.Keying).
	default:
		return nil, fmt.Errorf("securecall: unknown keying %q", c.keying)
	}
	if err := checkSIPConfig(&cfg); err != nil {
		return nil, err
	}
	if usesDTLS(c.keying) {
		c.cert = cfg.Certificate
		if len(c.cert.Certificate) == 0 {
			var err error
			if c.cert, err = media.GenerateCertificate(); err != nil {
				return nil, fmt.Errorf("securecall: generate DTLS certificate: %w", err)
			}
		}
		fp, err := media.CertificateFingerprint(c.cert)
		if err != nil {
			return nil, fmt.Errorf("securecall: certificate fingerprint: %w", err)
		}
		c.print = fp
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("securecall: random: %w", err)
	}
	c.ssrc = binary.BigEndian.Uint32(rnd[0:4])
	// The session id is part of the key schedule's sender identities, so it
	// must be unpredictable and differ between calls: keep it below 2^63 as
	// RFC 4566 suggests for o= lines.
	c.sid = binary.BigEndian.Uint64(rnd[4:12]) >> 1

	iceCfg := cfg.ICE
	userPath := cfg.ICE.OnPathChange
	iceCfg.OnPathChange = func(p ice.Path) {
		c.log.Debug("securecall: path", "local", p.Local.Type, "remote", p.Remote.Type, "relay", p.Relay != "")
		c.attest()
		if userPath != nil {
			userPath(p)
		}
		if cfg.OnPathChange != nil {
			cfg.OnPathChange(p)
		}
	}
	userConn := cfg.ICE.OnConnectivity
	iceCfg.OnConnectivity = func(up bool) {
		if userConn != nil {
			userConn(up)
		}
		c.pathAnswering(up)
	}
	if iceCfg.Logger == nil {
		iceCfg.Logger = cfg.Logger
	}
	t, err := ice.NewTransport(iceCfg)
	if err != nil {
		return nil, fmt.Errorf("securecall: %w", err)
	}
	c.ice = t
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	return c, nil
}

func usesDTLS(k sdp.Keying) bool { return k == sdp.KeyingDTLS || k == sdp.KeyingHybrid }

func usesKMS(k sdp.Keying) bool { return k == sdp.KeyingKMS || k == sdp.KeyingHybrid }

// Keying returns the call's keying mode: the configured one, or for an
// answerer the one the offer asked for once Answer has succeeded.
func (c *Call) Keying() sdp.Keying {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keying
}

// capabilities returns what this end offers or accepts, with the local
// candidates gathered so far.
func (c *Call) capabilities(keying sdp.Keying, keyURI string, cands []sdp.Candidate) sdp.Capabilities {
	creds := c.ice.LocalCredentials()
	caps := sdp.Capabilities{
		Keying:    keying,
		Codecs:    c.cfg.Codecs,
		ICE:       sdp.ICE{Ufrag: creds.Ufrag, Pwd: creds.Pwd, Candidates: cands},
		ICELite:   c.cfg.ICE.Lite,
		SSRC:      c.ssrc,
		CNAME:     "securecall-" + strconv.FormatUint(uint64(c.ssrc), 16),
		SessionID: c.sid,
	}
	if c.cfg.OnCandidate != nil {
		caps.ICE.Options = []string{"trickle"}
	}
	if usesDTLS(keying) {
		caps.Fingerprints = []sdp.Fingerprint{c.print}
	}
	if usesKMS(keying) {
		caps.KeyRef = &sdp.KeyRef{URI: keyURI}
	}
	return caps
}

// gather collects local candidates. Without trickle it blocks until
// gathering completes and returns them all; with trickle it starts
// gathering on a goroutine of the call, which hands each candidate to
// OnCandidate, and returns none.
func (c *Call) gather(ctx context.Context) ([]sdp.Candidate, error) {
	if cands, noICE, err := c.gatherDirect(); noICE || err != nil {
		return cands, err
	}
	if c.cfg.OnCandidate == nil {
		var cands []sdp.Candidate
		if err := c.ice.Gather(ctx, func(cand sdp.Candidate) { cands = append(cands, cand) }); err != nil {
			return nil, fmt.Errorf("securecall: gather candidates: %w", err)
		}
		return cands, nil
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.ice.Gather(c.ctx, c.cfg.OnCandidate); err != nil && c.ctx.Err() == nil {
			c.log.Warn("securecall: gathering failed", "err", err)
		}
	}()
	return nil, nil
}

// begin checks that op may run in the current state and marks gathering
// as under way, so that a concurrent Offer or Answer is refused.
func (c *Call) begin(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.state != StateNew || c.offer != nil || c.gathering:
		return &StateError{Op: op, State: c.state, Why: "the call has already made or answered an offer"}
	}
	c.gathering = true
	return nil
}

// abort undoes begin after a failure: the call is as it was before.
func (c *Call) abort() {
	c.mu.Lock()
	c.gathering = false
	c.mu.Unlock()
	c.undoNoICE()
}

// describe gathers candidates and builds this end's description from them
// with build, numbering it version unless that is zero. On failure it undoes
// begin, so that the call is as it was.
func (c *Call) describe(ctx context.Context, op string, keying sdp.Keying, keyURI string, version uint64,
	build func(sdp.Capabilities) (*sdp.Description, error)) (*sdp.Description, string, error) {
	cands, err := c.gather(ctx)
	if err != nil {
		c.abort()
		return nil, "", err
	}
	caps := c.capabilities(keying, keyURI, cands)
	if err := c.sipCapabilities(&caps); err != nil {
		c.abort()
		return nil, "", fmt.Errorf("securecall: %s: %w", op, err)
	}
	d, err := build(caps)
	if err != nil {
		c.abort()
		return nil, "", fmt.Errorf("securecall: %s: %w", op, err)
	}
	if version != 0 {
		d.Origin.SessionVersion = version
	}
	text, err := d.Marshal()
	if err != nil {
		c.abort()
		return nil, "", fmt.Errorf("securecall: %s: %w", op, err)
	}
	return d, string(text), nil
}

// Offer gathers candidates and returns the call's offer, to be sent to the
// peer over the application's signaling. In kms and hybrid keying the offer
// carries Config.KeyURI and no key material.
func (c *Call) Offer(ctx context.Context) (string, error) {
	keying := c.Keying()
	if usesKMS(keying) && c.cfg.KeyURI == "" {
		return "", fmt.Errorf("securecall: Offer: %s keying needs Config.KeyURI", keying)
	}
	if err := c.begin("Offer"); err != nil {
		return "", err
	}
	if err := c.prepareOfferRTCP(); err != nil {
		c.abort()
		return "", err
	}
	d, text, err := c.describe(ctx, "Offer", keying, c.cfg.KeyURI, 0, sdp.NewOffer)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.offer = d
	c.version = d.Origin.SessionVersion
	c.gathering = false
	c.mu.Unlock()
	return text, nil
}

// Answer takes the peer's offer and returns the answer to send back. In kms
// and hybrid keying it first fetches the call's key with the call's own
// KeySource, so that a device that is not a participant of the call fails
// here with the KMS's error. A failed Answer leaves the call unchanged.
// Connecting starts at once; Connect waits for it.
func (c *Call) Answer(ctx context.Context, offer string) (string, error) {
	remote, err := sdp.Unmarshal([]byte(offer))
	if err != nil {
		return "", fmt.Errorf("securecall: Answer: %w", err)
	}
	c.mu.Lock()
	restart := c.started && !c.closed
	c.mu.Unlock()
	if restart {
		return c.answerRestart(ctx, remote)
	}
	keying, err := c.offerKeying(remote)
	if err != nil {
		return "", fmt.Errorf("securecall: Answer: %w", err)
	}
	if c.cfg.Keying != "" && keying != c.cfg.Keying {
		return "", fmt.Errorf("securecall: Answer: offer asks for %s keying, this call is configured for %s: %w",
			keying, c.cfg.Keying, sdp.ErrNegotiation)
	}
	var keyURI string
	switch keying {
	case sdp.KeyingDTLS:
	case sdp.KeyingKMS, sdp.KeyingHybrid:
		if c.cfg.KeySource == nil {
			return "", fmt.Errorf("securecall: Answer: offer asks for %s keying and the call has no KeySource: %w",
				keying, sdp.ErrNegotiation)
		}
		ref := offerKeyRef(remote)
		if ref == nil || ref.URI == "" {
			return "", fmt.Errorf("securecall: Answer: %s offer without a key reference: %w", keying, sdp.ErrNegotiation)
		}
		keyURI = ref.URI
		// Fetch before answering: an unauthorized device must learn it
		// now, not after the peer has started sending.
		if _, err := c.cfg.KeySource.Keys(ctx, keyURI); err != nil {
			return "", fmt.Errorf("securecall: Answer: fetch call key %q: %w", keyURI, err)
		}
	case sdp.KeyingSDES:
		if c.cfg.Keying != sdp.KeyingSDES {
			// Never on the answerer's own: the keys would travel in the
			// signaling without the application having said that it is
			// encrypted.
			return "", fmt.Errorf("securecall: Answer: offer asks for sdes keying, which a Call uses only when Config.Keying says so: %w",
				sdp.ErrNegotiation)
		}
	default:
		return "", fmt.Errorf("securecall: Answer: offer asks for %s keying, which a Call does not support: %w",
			keying, sdp.ErrNegotiation)
	}
	if usesDTLS(keying) && len(c.cert.Certificate) == 0 {
		// Configured for kms keying but the offer is hybrid: the Call
		// refuses above unless Keying was left zero, and with a zero
		// Keying and a KeySource, New prepared a certificate.
		return "", fmt.Errorf("securecall: Answer: %s keying needs a DTLS certificate: %w", keying, sdp.ErrNegotiation)
	}
	if err := c.begin("Answer"); err != nil {
		return "", err
	}
	if err := c.prepareNoICE(remote); err != nil {
		c.abort()
		return "", err
	}
	if err := c.prepareRTCP(remote); err != nil {
		c.abort()
		return "", err
	}
	var agreement sdp.Agreement
	answer, text, err := c.describe(ctx, "Answer", keying, keyURI, 0, func(caps sdp.Capabilities) (*sdp.Description, error) {
		d, a, err := sdp.NewAnswer(remote, caps)
		agreement = a
		return d, err
	})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.keying = keying
	c.gathering = false
	c.version = answer.Origin.SessionVersion
	c.mu.Unlock()
	c.start(agreement, keyURI, remote.Origin.SessionID, senderID("offerer", remote), senderID("answerer", answer))
	return text, nil
}

// SetAnswer takes the peer's answer to this call's offer. A failed
// SetAnswer leaves the call unchanged, still waiting for an answer.
// Connecting starts at once; Connect waits for it.
func (c *Call) SetAnswer(ctx context.Context, answer string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("securecall: SetAnswer: %w", err)
	}
	remote, err := sdp.Unmarshal([]byte(answer))
	if err != nil {
		return fmt.Errorf("securecall: SetAnswer: %w", err)
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.offer == nil:
		st := c.state
		c.mu.Unlock()
		return &StateError{Op: "SetAnswer", State: st, Why: "the call has no offer awaiting an answer"}
	}
	offer := c.offer
	agreement, err := sdp.AcceptAnswer(offer, remote)
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("securecall: SetAnswer: %w", err)
	}
	if agreement.Keying != c.keying {
		c.mu.Unlock()
		return fmt.Errorf("securecall: SetAnswer: answer has %s keying, the offer %s: %w",
			agreement.Keying, c.keying, sdp.ErrNegotiation)
	}
	if err := c.checkAnswerTransport(agreement); err != nil {
		c.mu.Unlock()
		return err
	}
	c.offer = nil
	if c.restarting {
		c.restarting = false
		c.mu.Unlock()
		return c.applyRemote(agreement, "SetAnswer")
	}
	c.mu.Unlock()
	c.start(agreement, c.cfg.KeyURI, remote.Origin.SessionID, senderID("answerer", remote), senderID("offerer", offer))
	return nil
}

// Restart begins an ICE restart (RFC 8445 section 2.4) without ending the
// call, for when the path failed or the network changed: it makes new ICE
// credentials, gathers candidates again and returns a new offer for the
// peer, whose Answer recognizes it as a restart of the same call; pass the
// answer to SetAnswer. DTLS, the SRTP keys and the media session carry on
// across the restart; packets sent before the new path is selected are
// lost, as on a network without a route.
func (c *Call) Restart(ctx context.Context) (string, error) {
	keying, keyURI, version, err := c.beginRestart(ctx, "Restart", func() error {
		if !c.started {
			return &StateError{Op: "Restart", State: c.state, Why: "the call has not started; exchange an offer and an answer first"}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	d, text, err := c.describe(ctx, "Restart", keying, keyURI, version+1, sdp.NewOffer)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.offer, c.restarting, c.version, c.gathering = d, true, d.Origin.SessionVersion, false
	c.mu.Unlock()
	return text, nil
}

// beginRestart starts an ICE restart for op unless the call is closed, is
// already making a description, or refuse (run with c.mu held) objects: it
// marks the call as gathering, gives ICE new credentials and returns what
// the new description needs. On failure the call is as it was.
func (c *Call) beginRestart(ctx context.Context, op string, refuse func() error) (sdp.Keying, string, uint64, error) {
	c.mu.Lock()
	var err error
	switch {
	case c.closed:
		err = ErrClosed
	case c.offer != nil || c.gathering:
		err = &StateError{Op: op, State: c.state, Why: "a description is already being made or awaits its answer"}
	default:
		if err = c.refuseRestartNoICE(op); err == nil {
			err = refuse()
		}
	}
	if err != nil {
		c.mu.Unlock()
		return "", "", 0, err
	}
	c.gathering = true
	keying, keyURI, version := c.keying, c.keyURI, c.version
	c.mu.Unlock()
	if _, err := c.ice.Restart(ctx); err != nil {
		c.abort()
		return "", "", 0, fmt.Errorf("securecall: %s: %w", op, err)
	}
	return keying, keyURI, version, nil
}

// answerRestart answers an ICE restart offer from the peer of a started
// call: same session, new ICE credentials.
func (c *Call) answerRestart(ctx context.Context, remote *sdp.Description) (string, error) {
	keying, keyURI, version, err := c.beginRestart(ctx, "Answer", func() error {
		if remote.Origin.SessionID != c.remoteSID {
			return &StateError{Op: "Answer", State: c.state, Why: "the call has started and this offer is from another session"}
		}
		if k, err := remote.Keying(); err != nil || k != c.keying {
			return fmt.Errorf("securecall: Answer: a restart offer must keep %s keying: %w", c.keying, sdp.ErrNegotiation)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var agreement sdp.Agreement
	answer, text, err := c.describe(ctx, "Answer", keying, keyURI, version+1, func(caps sdp.Capabilities) (*sdp.Description, error) {
		d, a, err := sdp.NewAnswer(remote, caps)
		agreement = a
		return d, err
	})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.version = answer.Origin.SessionVersion
	c.gathering = false
	c.mu.Unlock()
	if err := c.applyRemote(agreement, "Answer"); err != nil {
		return "", err
	}
	return text, nil
}

// applyRemote gives ICE the peer's new credentials and candidates after a
// restart.
func (c *Call) applyRemote(a sdp.Agreement, op string) error {
	if err := c.ice.SetRemote(ice.Peer{Ufrag: a.Remote.Ufrag, Pwd: a.Remote.Pwd, Lite: a.RemoteLite}); err != nil {
		return fmt.Errorf("securecall: %s: %w", op, err)
	}
	for _, cand := range a.Remote.Candidates {
		if err := c.ice.AddRemoteCandidate(cand); err != nil {
			c.log.Debug("securecall: remote candidate skipped", "err", err)
		}
	}
	return nil
}

// offerKeyRef returns the key reference of the first media section that
// has one.
func offerKeyRef(d *sdp.Description) *sdp.KeyRef {
	for _, m := range d.Media {
		if m.KeyRef != nil {
			return m.KeyRef
		}
	}
	return nil
}

// senderID names one end of the call in the key schedule. Both ends know
// both session ids from the descriptions, and a session id is random per
// call, so a key resource reused by mistake for another call still yields
// fresh SRTP keys.
func senderID(role string, d *sdp.Description) string {
	return role + "/" + strconv.FormatUint(d.Origin.SessionID, 10)
}

// start moves the call to connecting and starts the goroutine that brings
// up ICE, DTLS and the media session. The ICE role is the agreement's: the
// offerer controls unless it is Lite and the answerer is not (RFC 8445
// section 6.1.1).
func (c *Call) start(a sdp.Agreement, keyURI string, remoteSID uint64, remoteID, localID string) {
	c.mu.Lock()
	c.agreement = a
	c.keyURI = keyURI
	c.remoteSID = remoteSID
	c.started = true
	c.mu.Unlock()
	c.setState(StateConnecting)
	for _, cand := range a.Remote.Candidates {
		if err := c.ice.AddRemoteCandidate(cand); err != nil {
			c.log.Debug("securecall: remote candidate skipped", "err", err)
		}
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(c.ready)
		err := c.connect(a, keyURI, localID, remoteID)
		c.mu.Lock()
		c.connectErr = err
		c.mu.Unlock()
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Warn("securecall: connect failed", "err", err)
				c.cancel(err)
				c.setState(StateFailed)
			}
			return
		}
		c.setState(StateConnected)
	}()
}

func (c *Call) connect(a sdp.Agreement, keyURI, localID, remoteID string) error {
	conn, err := c.connectTransport(a)
	if err != nil {
		return err
	}
	mcfg := media.Config{
		Keying:             a.Keying,
		Profiles:           c.cfg.Profiles,
		Certificate:        c.cert,
		RemoteFingerprints: a.RemoteFingerprints,
		HandshakeRTT:       c.ice.Path().RTT,
		Logger:             c.cfg.Logger,
	}
	if a.LocalSetup == sdp.SetupActive {
		mcfg.DTLSRole = media.DTLSClient
	} else {
		mcfg.DTLSRole = media.DTLSServer
	}
	if usesKMS(a.Keying) {
		mcfg.KeySource = c.cfg.KeySource
		mcfg.KeyURI = keyURI
		mcfg.LocalID = localID
		mcfg.RemoteID = remoteID
	}
	if a.Keying == sdp.KeyingSDES {
		if mcfg.SDES, err = sdesKeys(a); err != nil {
			return err
		}
	}
	c.sip.agree(a.Codecs)
	c.attestConfig(&mcfg, a.Keying)
	s, err := media.NewSession(c.ctx, conn, mcfg)
	if err != nil {
		return fmt.Errorf("securecall: media: %w", err)
	}
	if err := c.startAttesting(s, a.Keying); err != nil {
		s.Close()
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.Close()
		return ErrClosed
	}
	c.session = s
	c.mu.Unlock()
	return nil
}

// pathAnswering moves a connected call to disconnected when its path stops
// answering and back when it answers again.
func (c *Call) pathAnswering(up bool) {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	switch {
	case !up && st == StateConnected:
		c.setState(StateDisconnected)
	case up && st == StateDisconnected:
		c.setState(StateConnected)
	}
}

// setState records s and reports it to OnStateChange if it is a change.
// Failed and closed are final.
func (c *Call) setState(s State) {
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	c.mu.Lock()
	old := c.state
	if old == s || old == StateClosed || (old == StateFailed && s != StateClosed) {
		c.mu.Unlock()
		return
	}
	c.state = s
	c.mu.Unlock()
	c.log.Debug("securecall: state", "from", old, "to", s)
	if c.cfg.OnStateChange != nil {
		c.cfg.OnStateChange(s)
	}
}

// AddRemoteCandidate adds a candidate the peer trickled, in the
// "candidate:..." form (with or without "a="). Candidates may arrive before
// or after the description that they belong to.
func (c *Call) AddRemoteCandidate(candidate string) error {
	cand, err := sdp.ParseCandidate(candidate)
	if err != nil {
		return fmt.Errorf("securecall: AddRemoteCandidate: %w", err)
	}
	if c.isClosed() {
		return ErrClosed
	}
	if err := c.ice.AddRemoteCandidate(cand); err != nil {
		return fmt.Errorf("securecall: AddRemoteCandidate: %w", err)
	}
	return nil
}

// Connect waits until the call is connected: ICE has selected a path, the
// DTLS handshake (if any) is done and the SRTP keys are in place. It
// returns the reason when the call cannot connect.
func (c *Call) Connect(ctx context.Context) error {
	c.mu.Lock()
	started, closed := c.started, c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !started {
		return &StateError{Op: "Connect", State: c.State(), Why: "exchange an offer and an answer first"}
	}
	select {
	case <-c.ready:
	case <-ctx.Done():
		return fmt.Errorf("securecall: Connect: %w", ctx.Err())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return c.connectErr
}

func (c *Call) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// media returns the connected session.
func (c *Call) media() (*media.Session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, ErrClosed
	case c.session == nil:
		return nil, ErrNotConnected
	}
	return c.session, nil
}

// WriteRTP encrypts and sends one RTP packet with header h.
func (c *Call) WriteRTP(h media.RTPHeader, payload []byte) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	return s.WriteRTP(h, payload)
}

// ReadRTP receives and decrypts the next RTP packet, copies its payload
// into payload and returns its header and the payload's length.
func (c *Call) ReadRTP(payload []byte) (media.RTPHeader, int, error) {
	s, err := c.media()
	if err != nil {
		return media.RTPHeader{}, 0, err
	}
	h, n, err := s.ReadRTP(payload)
	if err == nil {
		c.sip.notePayloadType(h.PayloadType)
	}
	return h, n, err
}

// WriteRTCP encrypts and sends one compound RTCP packet.
func (c *Call) WriteRTCP(pkt []byte) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	return s.WriteRTCP(pkt)
}

// ReadRTCP receives and decrypts the next compound RTCP packet into buf.
func (c *Call) ReadRTCP(buf []byte) (int, error) {
	s, err := c.media()
	if err != nil {
		return 0, err
	}
	return s.ReadRTCP(buf)
}

// SetReadDeadline sets the deadline for ReadRTP and ReadRTCP, as on a
// net.Conn: a read blocked past t returns an error for which
// errors.Is(err, os.ErrDeadlineExceeded) holds. The zero time means no
// deadline. It applies once the call is connected.
func (c *Call) SetReadDeadline(t time.Time) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	return s.SetReadDeadline(t)
}

// SetWriteDeadline sets the deadline for WriteRTP and WriteRTCP, as on a
// net.Conn. The zero time means no deadline.
func (c *Call) SetWriteDeadline(t time.Time) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SSRC returns the synchronization source this end announces in its
// description; use it in the headers passed to WriteRTP.
func (c *Call) SSRC() uint32 { return c.ssrc }

// Codec returns the negotiated audio codec: the first codec both ends
// support, in the offer's order. It is zero before Answer or SetAnswer.
func (c *Call) Codec() sdp.Format {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.agreement.Codecs) == 0 {
		return sdp.Format{}
	}
	return c.agreement.Codecs[0]
}

// State returns the call's current state.
func (c *Call) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Path returns the media path ICE selected; it is zero until connected.
func (c *Call) Path() ice.Path { return c.path() }

// Context returns a context that is cancelled when the call ends; its
// cause (context.Cause) is ErrClosed after Close, or the reason the call
// failed.
func (c *Call) Context() context.Context { return c.ctx }

// Close ends the call: it stops the media session and ICE and waits for
// every goroutine of the call to finish. A second Close returns ErrClosed.
func (c *Call) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel(ErrClosed)
	// Media first, while ICE still carries it; a session that the connect
	// goroutine completes after this point is closed by that goroutine.
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	var mediaErr error
	if s != nil {
		mediaErr = s.Close()
	}
	iceErr := c.ice.Close()
	directErr := c.closeNoICE()
	c.wg.Wait()
	c.setState(StateClosed)
	return errors.Join(mediaErr, iceErr, directErr)
}
