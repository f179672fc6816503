package securecall

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// Call is one end of a secure call. Make it with New, exchange session
// descriptions with Offer, Answer and SetAnswer over the application's own
// signaling, wait for Connect, then carry media with WriteRTP and ReadRTP.
//
// Two state machines describe a call: [State] says whether media flows
// (new, connecting, connected, disconnected, failed, closed), and
// [SignalingState] where the offer/answer exchange is (stable,
// have-local-offer, have-remote-offer, closed); see signaling.go for its
// transitions.
//
// The methods of a Call may be called from any goroutine. ReadRTP and
// ReadRTCP may each be used by one goroutine while others write.
type Call struct {
	// cfg is a copy of New's, with defaults applied; its Certificate is
	// the one the call's DTLS uses (generated when New's had none), or
	// none when the keying needs no DTLS.
	cfg   Config
	log   *slog.Logger
	ice   *ice.Transport
	print sdp.Fingerprint
	ssrc  uint32
	sid   uint64

	ctx    context.Context
	cancel context.CancelCauseFunc
	ready  chan struct{} // closed when the connect attempt has finished
	wg     sync.WaitGroup

	mu    sync.Mutex
	state State
	// stateNotes are the state changes OnStateChange has yet to hear of;
	// reporting is non-nil while a goroutine reports them (reportStates),
	// and closed when it has reported all.
	stateNotes []stateNote
	reporting  chan struct{}
	signaling  SignalingState
	keying     sdp.Keying
	offer      *sdp.Description // the local offer awaiting its answer
	// offerTimer rolls back an unanswered restart offer.
	offerTimer *time.Timer
	// The flags share one word.
	//
	// pathLost: ICE restarted (restart.go) and has selected no pair since,
	// so the call has no path: it is not StateConnected.
	pathLost bool
	making   bool // Offer, Restart or Answer is building a description
	// offerer: this end made the call's first offer; its restart wins a
	// glare (see Answer).
	offerer bool
	// gathered: ICE gathered, or began to, for an earlier description,
	// so a new one needs fresh ICE credentials first.
	gathered bool
	// iceReset: ICE restarted for a description of this started call
	// that no completed exchange has carried yet (restart.go).
	iceReset    bool
	answerTaken bool // SetAnswer has taken an answer
	started     bool // the connect goroutine has been started
	closed      bool
	// localCands are the candidates of this end's last gathering that its
	// descriptions carry (none with trickle), trickle those it trickled.
	localCands []sdp.Candidate
	trickle    trickleState
	// local and peer are this end's and the peer's descriptions of the
	// last completed exchange: what a later offer of this end keeps
	// (sdp.NewLaterOffer).
	local, peer *sdp.Description
	keyURI      string  // the call's key resource, once started
	remoteSID   uint64  // the peer's session id, once started (session.go)
	remoteICE   sdp.ICE // the peer's current ICE credentials, once started
	version     uint64  // the origin version of this end's last description
	// lastOffer and lastAnswer are the origin version of the peer's last
	// offer and the answer made to it, returned again when the offer is
	// retransmitted; lastAnswerVersion is that of the last answer taken.
	lastOffer         uint64
	lastAnswer        string
	lastAnswerVersion uint64
	leftSessions      []leftSession // sessions of the peer's that it left (session.go)
	idle              chan struct{} // closed when the description being made is done
	agreement         sdp.Agreement
	session           *media.Session
	samples           *media.SampleWriter // made by the first WriteSample
	connectErr        error
	failErr           error                    // why the call failed, once it has
	mediaRef          atomic.Pointer[mediaRef] // published by publishMediaLocked

	silence silenceWatch
	// live is mediaRef's session while it has no error, else nil: the
	// packet path's look at the Call, next to dir, which WriteRTP checks,
	// and sip.agreed, which ReadRTP follows.
	live atomic.Pointer[media.Session]
	dir  directionState // the agreed direction, for the send path (direction.go)
	sip  sipState       // SIP gear: sdes, peers without ICE, RTCP apart (call_sip.go)
	hold holdState      // this end's own hold (hold.go)
}

// New makes a Call from cfg. It checks cfg and prepares the call without
// any network I/O; a DTLS certificate is generated if cfg has none and the
// keying needs one.
func New(cfg Config) (*Call, error) {
	cfg = cfg.withDefaults()
	c := &Call{cfg: cfg, ready: make(chan struct{})}
	c.sip.agreed = new(payloadTypes)
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
	if w := cfg.Media.ReplayWindow; w != 0 && (w <= media.HeldPacketLimit || w > maxReplayWindow) {
		return nil, fmt.Errorf("securecall: Media.ReplayWindow %d outside %d to %d", w, media.HeldPacketLimit+1, maxReplayWindow)
	}
	if cfg.Media.MaxPackets > maxSRTPPackets || cfg.Media.KeyLifetime < 0 || cfg.Media.RotationGrace < 0 ||
		cfg.Media.HandshakeTimeout < 0 || cfg.Media.SilenceTimeout < 0 {
		return nil, errors.New("securecall: Media has a negative duration or a packet limit beyond SRTP's 2^48")
	}
	if cfg.OnGatheringDone != nil && cfg.OnCandidate == nil {
		return nil, errors.New("securecall: OnGatheringDone needs OnCandidate (trickle ICE)")
	}
	if err := checkSIPConfig(&cfg); err != nil {
		return nil, err
	}
	if usesDTLS(c.keying) {
		if len(c.cfg.Certificate.Certificate) == 0 {
			var err error
			if c.cfg.Certificate, err = media.GenerateCertificate(); err != nil {
				return nil, fmt.Errorf("securecall: generate DTLS certificate: %w", err)
			}
		}
		fp, err := media.CertificateFingerprint(c.cfg.Certificate)
		if err != nil {
			return nil, fmt.Errorf("securecall: certificate fingerprint: %w", err)
		}
		c.print = fp
	} else {
		c.cfg.Certificate = tls.Certificate{} // the keying needs none
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
	// The callbacks capture what they call, not cfg, which would move to
	// the heap beside c.cfg's copy.
	userPath, callPath := cfg.ICE.OnPathChange, cfg.OnPathChange
	iceCfg.OnPathChange = func(p ice.Path) {
		c.log.Debug("securecall: path", "local", p.Local.Type, "remote", p.Remote.Type, "relay", p.Relay != "")
		c.pathSelected()
		c.attest()
		if userPath != nil {
			userPath(p)
		}
		if callPath != nil {
			callPath(p)
		}
	}
	userConn := cfg.ICE.OnConnectivity
	iceCfg.OnConnectivity = func(up bool) {
		if userConn != nil {
			userConn(up)
		}
		c.pathAnswering(up)
	}
	userFailed := cfg.ICE.OnFailed
	iceCfg.OnFailed = func(err error) {
		if userFailed != nil {
			userFailed(err)
		}
		c.fail(fmt.Errorf("securecall: path failed: %w", err))
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

// answerKeyings returns the keying modes a first Answer accepts: the
// configured one; with a zero Keying and a KeySource, kms or hybrid and
// never less; with neither, dtls.
func (c *Call) answerKeyings() []sdp.Keying {
	switch {
	case c.cfg.Keying != "":
		return []sdp.Keying{c.cfg.Keying}
	case c.cfg.KeySource != nil:
		return []sdp.Keying{sdp.KeyingHybrid, sdp.KeyingKMS}
	}
	return []sdp.Keying{sdp.KeyingDTLS}
}

// keyingStrength orders keying modes by what an attacker must hold to read
// the media: the signaling alone (sdes), the signaling path to swap
// fingerprints (dtls), the KMS key (kms), or both the KMS key and the DTLS
// session (hybrid).
func keyingStrength(k sdp.Keying) int {
	switch k {
	case sdp.KeyingDTLS:
		return 1
	case sdp.KeyingKMS:
		return 2
	case sdp.KeyingHybrid:
		return 3
	}
	return 0
}

// checkKeying refuses a remote description whose keying is not among
// allowed. A keying weaker than every allowed one is a downgrade: it is
// refused with a *DowngradeError and logged at Warn, so that the stripped
// a=key-mgmt line an attacker on the signaling path removed shows up.
func (c *Call) checkKeying(op string, remote sdp.Keying, allowed []sdp.Keying) error {
	weakest := 0
	for i, k := range allowed {
		if k == remote {
			return nil
		}
		if s := keyingStrength(k); i == 0 || s < weakest {
			weakest = s
		}
	}
	if keyingStrength(remote) < weakest {
		err := &DowngradeError{Op: op, Offered: remote, Required: append([]sdp.Keying(nil), allowed...)}
		c.log.Warn("securecall: keying downgrade refused", "op", op, "offered", string(remote), "required", fmt.Sprint(allowed))
		return err
	}
	return fmt.Errorf("securecall: %s: the peer's description asks for %s keying, this call accepts %v: %w",
		op, remote, allowed, sdp.ErrNegotiation)
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
		CNAME:     c.cname(),
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
	// Counted under mu with the call open, as startedLocked counts the
	// connect goroutine, so that Close waits for it or it never starts.
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("securecall: gather candidates: %w", ErrClosed)
	}
	c.wg.Add(1)
	c.trickle = trickleState{gen: c.trickle.gen + 1}
	gen := c.trickle.gen
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		err := c.ice.Gather(c.ctx, func(cand sdp.Candidate) {
			if c.trickled(gen, cand) {
				c.cfg.OnCandidate(cand)
			}
		})
		c.mu.Lock()
		current := c.trickle.gen == gen && !c.closed
		if current && err == nil {
			c.trickle.done = true
		}
		c.mu.Unlock()
		if !current || c.ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Warn("securecall: gathering failed", "err", err)
			err = fmt.Errorf("securecall: gather candidates: %w", err)
		}
		if c.cfg.OnGatheringDone != nil {
			c.cfg.OnGatheringDone(err)
		}
	}()
	return nil, nil
}

// trickleState is what this end has trickled (Config.OnCandidate) in its
// current gathering, which each new set of ICE credentials starts: the
// candidates, in order, and whether the gathering is done. gen numbers
// the gatherings, so that a late report of an earlier one changes
// nothing. The candidates are this host's own, one per interface,
// address family and type, so the list stays short.
type trickleState struct {
	gen   uint64
	cands []sdp.Candidate
	done  bool
}

// trickled records cand, trickled by gathering gen, before OnCandidate
// hands it to the application: from then on it is signalled, and every
// later description that keeps the ICE session carries it. It reports
// false, and records nothing, for a gathering that a restart replaced:
// its candidate belongs to credentials the peer no longer checks.
func (c *Call) trickled(gen uint64, cand sdp.Candidate) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trickle.gen != gen || c.closed {
		return false
	}
	c.trickle.cands = append(c.trickle.cands, cand)
	return true
}

// keptCandidatesLocked returns (c.mu held) the candidates of a later
// description that keeps the ICE session, and whether it says
// end-of-candidates: every local candidate signalled so far, in the last
// description or trickled (RFC 8839 section 4.4.1.2.2), with
// end-of-candidates once a trickled gathering is done (RFC 8838), so
// that a peer that reads the description as a full one (a SIP B2BUA
// that does not trickle, a stack that replaces its remote candidates
// with each description's) keeps the path.
func (c *Call) keptCandidatesLocked() ([]sdp.Candidate, bool) {
	cands := make([]sdp.Candidate, 0, len(c.localCands)+len(c.trickle.cands))
	cands = append(cands, c.localCands...)
	cands = append(cands, c.trickle.cands...)
	return cands, c.cfg.OnCandidate != nil && c.trickle.done
}

// begin takes the signaling step op for the method named name, unless the
// call is closed, another description is being made, refuse (run with c.mu
// held) objects or the signaling state does not allow op. It marks a
// description as being made; finish or abort ends that.
func (c *Call) begin(name string, op signalingOp, refuse func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.making:
		return &StateError{Op: name, State: c.state, Why: "another description is being made"}
	}
	return c.beginLocked(name, op, refuse)
}

// beginLocked is begin with c.mu held and nothing being made.
func (c *Call) beginLocked(name string, op signalingOp, refuse func() error) error {
	if refuse != nil {
		if err := refuse(); err != nil {
			return err
		}
	}
	next, err := c.signaling.next(op)
	if err != nil {
		return &StateError{Op: name, State: c.state, Why: err.Error()}
	}
	c.signaling, c.making = next, true
	c.idle = make(chan struct{})
	return nil
}

// doneMaking ends what begin started (c.mu held).
func (c *Call) doneMakingLocked() {
	c.making = false
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// describedLocked ends what begin started (c.mu held) once describe has
// made the description, which the method then records and hands out;
// unless Close ran meanwhile: Close has stopped the call's timers and
// closed the exchange, so the description is dropped, nothing may be
// armed or started for it, and the method returns ErrClosed.
func (c *Call) describedLocked() error {
	c.doneMakingLocked()
	if c.closed {
		return ErrClosed
	}
	return nil
}

// abort undoes begin after a failure: the exchange is as it was before.
func (c *Call) abort() {
	c.mu.Lock()
	c.doneMakingLocked()
	if c.signaling != SignalingClosed {
		c.signaling = SignalingStable
	}
	c.mu.Unlock()
	c.undoNoICE()
}

// describe gathers candidates (after giving ICE fresh credentials if
// restartICE) and builds this end's description from them with build,
// numbering it version unless that is zero. On failure it undoes begin.
// With keep set it gathers nothing and describes the candidates signalled
// so far (keptCandidatesLocked), for a description that keeps the ICE
// session.
func (c *Call) describe(ctx context.Context, op string, restartICE, keep bool, keying sdp.Keying, keyURI string,
	version uint64, build func(sdp.Capabilities) (*sdp.Description, error)) (*sdp.Description, string, error) {
	var (
		cands []sdp.Candidate
		eoc   bool
	)
	if keep {
		c.mu.Lock()
		cands, eoc = c.keptCandidatesLocked()
		c.mu.Unlock()
	} else {
		if restartICE {
			if _, err := c.ice.Restart(ctx); err != nil {
				c.abort()
				return nil, "", fmt.Errorf("securecall: %s: %w", op, err)
			}
			c.iceRestarted()
		}
		// Before gathering: a gathering cut short by ctx runs on in the
		// ICE agent, which gathers again only after a restart.
		c.mu.Lock()
		c.gathered = true
		c.mu.Unlock()
		var err error
		if cands, err = c.gather(ctx); err != nil {
			c.abort()
			return nil, "", err
		}
	}
	caps := c.capabilities(keying, keyURI, cands)
	caps.ICE.EndOfCandidates = eoc
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
	if !keep {
		c.mu.Lock()
		c.localCands = cands
		c.mu.Unlock()
	}
	if h := testHookDescribed; h != nil {
		h(c, op)
	}
	return d, string(text), nil
}

// answerTo returns a describe build step that answers remote and keeps the
// agreement the answer makes in *agreement.
func answerTo(remote *sdp.Description, agreement *sdp.Agreement) func(sdp.Capabilities) (*sdp.Description, error) {
	return func(caps sdp.Capabilities) (*sdp.Description, error) {
		d, a, err := sdp.NewAnswer(remote, caps)
		*agreement = a
		return d, err
	}
}

// checkAnswerable reports, before Answer changes anything, an offer that
// the answer to it would refuse: losing a glare to it rolls this end's
// offer back, and a restart offer restarts ICE, neither of which an offer
// that is then refused may do. It answers remote from the current ICE
// credentials without candidates, keeps the agreement for the checks
// that need it, and throws the answer away.
func (c *Call) checkAnswerable(remote *sdp.Description, keying sdp.Keying, keyURI string) (sdp.Agreement, error) {
	caps := c.capabilities(keying, keyURI, nil)
	if err := c.sipCapabilities(&caps); err != nil {
		return sdp.Agreement{}, fmt.Errorf("securecall: Answer: %w", err)
	}
	_, a, err := sdp.NewAnswer(remote, caps)
	if err != nil {
		return sdp.Agreement{}, fmt.Errorf("securecall: Answer: %w", err)
	}
	return a, nil
}

// Offer gathers candidates and returns the call's offer, to be sent to the
// peer over the application's signaling. In kms and hybrid keying the offer
// carries Config.KeyURI and no key material. The call then awaits the
// answer (SignalingHaveLocalOffer): pass it to SetAnswer, or abandon the
// offer with Rollback. After Close, also one that ran while Offer
// gathered, it returns ErrClosed.
func (c *Call) Offer(ctx context.Context) (string, error) {
	keying := c.Keying()
	if usesKMS(keying) && c.cfg.KeyURI == "" {
		return "", fmt.Errorf("securecall: Offer: %s keying needs Config.KeyURI", keying)
	}
	var restartICE bool
	err := c.begin("Offer", opLocalOffer, func() error {
		if c.started {
			return &StateError{Op: "Offer", State: c.state, Why: "the call has started; use Restart for a new offer"}
		}
		restartICE = c.gathered
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := c.prepareOfferRTCP(); err != nil {
		c.abort()
		return "", err
	}
	d, text, err := c.describe(ctx, "Offer", restartICE, false, keying, c.cfg.KeyURI, c.nextVersion(), sdp.NewOffer)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.describedLocked(); err != nil {
		return "", err
	}
	c.offer, c.version = d, d.Origin.SessionVersion
	return text, nil
}

// nextVersion returns the origin version for this end's next description:
// zero (the sdp package's choice) for the first, one more than the last
// after that.
func (c *Call) nextVersion() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version == 0 {
		return 0
	}
	return c.version + 1
}

// offerKind is what an offer is to a call.
type offerKind int

const (
	offerFirst      offerKind = iota // the offer that starts the call
	offerRepeat                      // the last offer again: answer as before
	offerRestart                     // new ICE credentials: an ICE restart
	offerNoRestart                   // a new version with the same ICE session
	offerNotForCall                  // from another session than the call's, which it cannot take (session.go)
	offerStale                       // older than the last offer answered
)

// classifyOffer says what remote is to the call (c.mu held). An offer of
// the call's session is an ICE restart when its ICE credentials are new
// (RFC 8839 section 4.4.1.1.1), a retransmission when it keeps them and
// its o= version is the one already answered (RFC 3264 section 8), stale
// when its version is below that one (a late copy of an earlier offer:
// each new description's version is one more than the last), and
// otherwise a re-offer of the same ICE session.
func (c *Call) classifyOffer(remote *sdp.Description) offerKind {
	if !c.started {
		return offerFirst
	}
	creds := descICE(remote)
	sameICE := creds.Ufrag == c.remoteICE.Ufrag && creds.Pwd == c.remoteICE.Pwd
	if remote.Origin.SessionID != c.remoteSID {
		// Its versions are its own: neither a repeat nor stale here.
		switch {
		case c.otherSessionLocked("Answer", remote.Origin.SessionID, remote.Origin.SessionVersion) != nil:
			return offerNotForCall
		case !sameICE:
			return offerRestart
		}
		return offerNoRestart
	}
	if c.lastAnswer != "" && remote.Origin.SessionVersion < c.lastOffer {
		return offerStale
	}
	switch {
	case !sameICE:
		return offerRestart
	case remote.Origin.SessionVersion == c.lastOffer && c.lastAnswer != "":
		return offerRepeat
	}
	return offerNoRestart
}

// descICE returns the ICE credentials of the first section that has them.
func descICE(d *sdp.Description) sdp.ICE {
	for _, m := range d.Media {
		if m.ICE.Ufrag != "" {
			return m.ICE
		}
	}
	return sdp.ICE{}
}

// winsGlareLocked reports whether this end's pending offer wins over the
// peer's offer remote, made at the same time (c.mu held). The rule: in a
// started call the end that made the call's first offer wins; before
// that, the end whose o= session id is larger. The loser rolls back its
// own offer and answers the winner's.
func (c *Call) winsGlareLocked(remote *sdp.Description) bool {
	if c.started {
		return c.offerer
	}
	return c.sid > remote.Origin.SessionID
}

// Answer takes the peer's offer and returns the answer to send back. In kms
// and hybrid keying it first fetches the call's key with the call's own
// KeySource, so that a device that is not a participant of the call fails
// here with the KMS's error. A failed Answer leaves the call unchanged.
// Connecting starts at once; Connect waits for it.
//
// On a started call Answer takes the peer's later offers: the same offer again
// (same o= version, as a signaling layer that retransmits sends it) gets the
// same answer and changes nothing; a late copy of an earlier offer (an o=
// version below the last one answered) is refused with a *StateError and
// changes nothing; an offer with new ICE credentials is an ICE restart (the
// call is StateDisconnected from then until the new path is selected, as after
// Restart); a new version with the same credentials keeps the ICE session.
// After this end's own restart failed or was rolled back (see Restart), it has
// no ICE session to keep: such an offer is refused with a *StateError and
// changes nothing, and a restart from either end carries media again. In a call
// without ICE a new version may move the peer's media: from the answer on, RTP
// and RTCP go to its new c=/m= (and a=rtcp) addresses, whatever source had been
// latched; an address the transport would not take for a first offer (off the
// site under DirectOnly, with ice.ErrNoICEPolicy; a host name or an address of
// the other IP family, wrapping sdp.ErrNegotiation) is refused and changes
// nothing, and the unspecified address (the old way to hold) moves nothing and
// holds the call. In sdes keying a call keeps its keys: later descriptions
// state the crypto lines in use, and an offer (or answer) that changes the
// peer's key is refused with an error wrapping sdp.ErrNegotiation; in dtls and
// hybrid keying it keeps its DTLS association, and an offer (or answer) whose
// fingerprints name none of those the peer started with is refused the same
// way. When both ends offer at once (glare), the winner (see [ErrGlare])
// refuses the peer's offer with ErrGlare and the loser rolls its own offer back
// and answers; an offer that cannot be answered is refused before that, and the
// loser's own offer stays.
//
// Every exchange, first or later, sets the media direction (a SIP hold is a
// re-offer of sendonly or inactive, its resume one of sendrecv): see
// [Call.Direction] for what a held call does. While this end holds the call
// itself ([Call.Hold]), the answer to every later offer keeps the hold:
// sendonly, or inactive to an offer of sendonly or inactive. A later exchange
// keeps the call's codec first in the answer when the offer lists it, whatever
// the offer's order; an offer that lists only other codecs switches the call to
// the first of them at the call's RTP clock rate (PCMU to PCMA, say: Codec,
// WriteSample's payload type and Stats.OutsideAgreement follow at once), and
// one whose codecs all run at another clock rate (Opus to PCMU) is refused with
// an error wrapping sdp.ErrNegotiation and changes nothing, since the call's
// RTCP and sample timestamps keep the clock rate it started with. The same
// holds for SetAnswer's later answers. A later offer that changes whether a
// call with ICE multiplexes RTCP is refused the same way: the ICE transport
// keeps its components for the call's life.
//
// A later offer whose o= session id is not the one the peer's descriptions
// had (RFC 3264 forbids the change, but B2BUAs and border elements that
// pass on the SDP of whoever is behind them make it, after a transfer for
// example) is judged by the keying. In kms and hybrid keying the session
// ids name the call's senders in the key schedule, so the call cannot take
// it: Answer returns a *SessionChangedError (errors.Is ErrSessionChanged),
// changes nothing, and the call goes on with the party it has; to reach the
// new party, close the call and answer its offer with a new Call. In dtls
// and sdes keying the session id names no key: the offer is judged as any
// later offer (the keys and fingerprint the call started with must stay,
// or it is refused as above) and, once answered, its session is the peer's
// and its o= versions count afresh; a later description of the session the
// peer left, with a version no newer than the last the call took from it
// (a late copy), is refused with a *StateError and changes nothing. The
// same holds for SetAnswer's answers.
func (c *Call) Answer(ctx context.Context, offer string) (string, error) {
	remote, err := sdp.Unmarshal([]byte(offer))
	if err != nil {
		return "", fmt.Errorf("securecall: Answer: %w", err)
	}
	answer, err := c.answer(ctx, remote)
	if errors.Is(err, errStartedMeanwhile) {
		// Another copy of this offer (or another offer) started the call
		// while this one was checked: judge it again as a later offer.
		answer, err = c.answer(ctx, remote)
	}
	if errors.Is(err, errStartedMeanwhile) {
		err = &StateError{Op: "Answer", State: c.State(), Why: "the call has started meanwhile"}
	}
	return answer, err
}

// errStartedMeanwhile: answerFirst found the call started by the time it
// could begin; Answer classifies the offer again.
var errStartedMeanwhile = errors.New("securecall: the call started meanwhile")

func (c *Call) answer(ctx context.Context, remote *sdp.Description) (string, error) {
	if err := c.refuseOwn("Answer", remote); err != nil {
		return "", err
	}
	c.mu.Lock()
	if err := c.waitIdleLocked(ctx); err != nil {
		c.mu.Unlock()
		return "", err
	}
	kind := c.classifyOffer(remote)
	last := c.lastAnswer
	var notForCall error
	if kind == offerNotForCall {
		notForCall = c.otherSessionLocked("Answer", remote.Origin.SessionID, remote.Origin.SessionVersion)
	}
	c.mu.Unlock()
	switch kind {
	case offerRepeat:
		return last, nil
	case offerNotForCall:
		return "", notForCall
	case offerStale:
		return "", &StateError{Op: "Answer", State: c.State(), Why: "the offer's o= version is older than the last offer answered (a late copy of an earlier offer)"}
	case offerRestart, offerNoRestart:
		return c.answerAgain(ctx, remote, kind == offerRestart)
	}
	return c.answerFirst(ctx, remote)
}

// beginAnswer takes the remote-offer step for Answer, resolving glare: if
// this end has an offer pending, it wins (ErrGlare) or rolls its own back.
// refuse runs first, with c.mu held.
func (c *Call) beginAnswer(ctx context.Context, remote *sdp.Description, refuse func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The peer's offer may cross this end's while that is still being
	// made (gathering): wait for it, then resolve the glare.
	if err := c.waitIdleLocked(ctx); err != nil {
		return err
	}
	return c.beginLocked("Answer", opRemoteOffer, func() error {
		if refuse != nil {
			if err := refuse(); err != nil {
				return err
			}
		}
		if c.signaling == SignalingHaveLocalOffer && c.offer != nil {
			if c.winsGlareLocked(remote) {
				c.log.Info("securecall: offers crossed; this end's offer wins")
				return fmt.Errorf("securecall: Answer: %w", ErrGlare)
			}
			c.log.Info("securecall: offers crossed; rolling back this end's offer to answer the peer's")
			c.rollbackLocked()
		}
		return nil
	})
}

// waitIdleLocked waits (c.mu held, released meanwhile) until no
// description is being made, for Answer: an offer that crosses this end's
// own offer, or a retransmission of one being answered, is handled once
// that is done.
func (c *Call) waitIdleLocked(ctx context.Context) error {
	for c.making && !c.closed {
		idle := c.idle
		c.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			c.mu.Lock()
			return fmt.Errorf("securecall: Answer: %w", ctx.Err())
		}
		c.mu.Lock()
	}
	if c.closed {
		return ErrClosed
	}
	return nil
}

// answerFirst answers the offer that starts the call.
func (c *Call) answerFirst(ctx context.Context, remote *sdp.Description) (string, error) {
	keying, err := c.offerKeying(remote)
	if err != nil {
		return "", fmt.Errorf("securecall: Answer: %w", err)
	}
	if err := c.checkKeying("Answer", keying, c.answerKeyings()); err != nil {
		return "", err
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
			return "", fmt.Errorf("securecall: Answer: fetch call key %.96q: %w", keyURI, err)
		}
	case sdp.KeyingSDES:
		// checkKeying let it through: Config.Keying asks for sdes.
	default:
		return "", fmt.Errorf("securecall: Answer: offer asks for %s keying, which a Call does not support: %w",
			keying, sdp.ErrNegotiation)
	}
	if usesDTLS(keying) && len(c.cfg.Certificate.Certificate) == 0 {
		// Configured for kms keying but the offer is hybrid: the Call
		// refuses above unless Keying was left zero, and with a zero
		// Keying and a KeySource, New prepared a certificate.
		return "", fmt.Errorf("securecall: Answer: %s keying needs a DTLS certificate: %w", keying, sdp.ErrNegotiation)
	}
	if _, err := c.checkAnswerable(remote, keying, keyURI); err != nil {
		return "", err
	}
	var restartICE bool
	err = c.beginAnswer(ctx, remote, func() error {
		if c.started {
			return errStartedMeanwhile
		}
		return nil
	})
	if err != nil {
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
	c.mu.Lock()
	restartICE = c.gathered // a rolled-back offer of this end gathered already
	c.mu.Unlock()
	var agreement sdp.Agreement
	answer, text, err := c.describe(ctx, "Answer", restartICE, false, keying, keyURI, c.nextVersion(), answerTo(remote, &agreement))
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	if err := c.describedLocked(); err != nil {
		// Close has waited for the call's goroutines: nothing may start.
		c.mu.Unlock()
		return "", err
	}
	c.keying = keying
	c.signaling, _ = c.signaling.next(opLocalAnswer)
	c.version = answer.Origin.SessionVersion
	c.lastOffer, c.lastAnswer = remote.Origin.SessionVersion, text
	c.local, c.peer = answer, remote
	c.startedLocked(agreement, keyURI, remote.Origin.SessionID, false)
	c.mu.Unlock()
	c.start(agreement, keyURI, senderID("offerer", remote), senderID("answerer", answer))
	return text, nil
}

// testHookDescribed, if set, runs when describe has made a description for
// the method op, before that method records it (tests only).
var testHookDescribed func(c *Call, op string)

// refuseOwn refuses this call's own description coming back to it (a
// signaling loop, or an attacker reflecting it): it would win no glare
// and start no call, and session ids are random, so no peer has this
// call's.
func (c *Call) refuseOwn(op string, remote *sdp.Description) error {
	if remote.Origin.SessionID == c.sid {
		return fmt.Errorf("securecall: %s: the description carries this call's own session id (it came back to the call that made it): %w",
			op, sdp.ErrNegotiation)
	}
	return nil
}

// answerAgain answers a later offer of the started call: an ICE restart
// (new ICE credentials and candidates on both sides) when restart is set,
// else a new description of the same ICE session.
func (c *Call) answerAgain(ctx context.Context, remote *sdp.Description, restart bool) (string, error) {
	var (
		keying  sdp.Keying
		keyURI  string
		version uint64
	)
	// The call's keying and key never change once started.
	c.mu.Lock()
	keying, keyURI = c.keying, c.keyURI
	c.mu.Unlock()
	ks, err := remote.Keyings()
	if err != nil {
		return "", fmt.Errorf("securecall: Answer: %w", err)
	}
	if !slices.Contains(ks, keying) {
		// An offer that allows several modes (dtls and sdes) is judged
		// by the one the call runs, as the first offer was.
		if err := c.checkKeying("Answer", ks[0], []sdp.Keying{keying}); err != nil {
			return "", err
		}
	}
	check, err := c.checkAnswerable(remote, keying, keyURI)
	if err != nil {
		return "", err
	}
	err = c.beginAnswer(ctx, remote, func() error {
		if restart {
			if err := c.refuseRestartNoICE("Answer"); err != nil {
				return err
			}
		}
		if check.NoICE && c.sip.direct == nil {
			return fmt.Errorf("securecall: Answer: the offer has no ICE, and this call runs ICE: %w", sdp.ErrNegotiation)
		}
		if err := c.checkLaterLocked("Answer", &check); err != nil {
			return err
		}
		version = c.version
		if !restart {
			if err := c.refuseKeptICELocked(remote); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	var agreement sdp.Agreement
	answer, text, err := c.describe(ctx, "Answer", restart, !restart, keying, keyURI, version+1,
		c.keepHold(c.answerKeeping(remote, &agreement), &agreement))
	if err != nil {
		return "", err
	}
	if err := c.moveNoICE("Answer", agreement); err != nil {
		c.abort()
		return "", err
	}
	c.mu.Lock()
	if err := c.describedLocked(); err != nil {
		c.mu.Unlock()
		return "", err
	}
	c.version = answer.Origin.SessionVersion
	c.signaling, _ = c.signaling.next(opLocalAnswer)
	c.takeSessionLocked(remote.Origin.SessionID)
	c.lastOffer, c.lastAnswer = remote.Origin.SessionVersion, text
	c.local, c.peer = answer, remote
	c.applyAgreementLocked(agreement)
	if restart {
		// Now, with lastOffer: a retransmission of this offer must find
		// its credentials current.
		c.remoteICE = sdp.ICE{Ufrag: agreement.Remote.Ufrag, Pwd: agreement.Remote.Pwd}
		c.iceReset = false
	}
	c.mu.Unlock()
	if restart {
		if err := c.applyRemote(agreement, "Answer"); err != nil {
			return "", err
		}
	}
	return text, nil
}

// olderThanPeerLocked reports (c.mu held) an o= version of the peer's
// below that of its last description the call has taken, an offer it
// answered or an answer: each new description's version is at least the
// last one (RFC 3264 section 8), so this is a late copy of an earlier one.
func (c *Call) olderThanPeerLocked(version uint64) bool {
	return c.answerTaken && version < c.lastAnswerVersion || c.lastAnswer != "" && version < c.lastOffer
}

// SetAnswer takes the peer's answer to this call's offer. A failed
// SetAnswer leaves the call unchanged, still waiting for an answer; the
// same answer taken twice (a retransmission) is accepted again and
// changes nothing, and a late copy of an earlier answer of the started
// call (an o= version below the peer's last description) is refused with
// a *StateError and changes nothing. An answer of a started call from
// another o= session than the peer's is judged as Answer judges such an
// offer (see [Call.Answer]). Connecting starts at once; Connect waits for
// it.
//
// The answer to a Restart offer gives ICE the peer's new credentials and
// candidates. The answer to a Hold or Resume offer keeps the ICE session
// and restarts nothing: it sets the direction and codec, and without ICE
// may move the peer's media as a later offer may (see [Call.Answer]); one
// that gives the peer's ICE credentials anew is refused with an error
// wrapping sdp.ErrNegotiation, since only an offer restarts ICE.
func (c *Call) SetAnswer(ctx context.Context, answer string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("securecall: SetAnswer: %w", err)
	}
	remote, err := sdp.Unmarshal([]byte(answer))
	if err != nil {
		return fmt.Errorf("securecall: SetAnswer: %w", err)
	}
	if err := c.refuseOwn("SetAnswer", remote); err != nil {
		return err
	}
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return ErrClosed
	case c.signaling == SignalingStable && c.answerTaken && remote.Origin.SessionID == c.remoteSID &&
		remote.Origin.SessionVersion == c.lastAnswerVersion:
		c.mu.Unlock()
		return nil // the answer already taken, sent again
	case c.started && remote.Origin.SessionID == c.remoteSID && c.olderThanPeerLocked(remote.Origin.SessionVersion):
		st := c.state
		c.mu.Unlock()
		return &StateError{Op: "SetAnswer", State: st,
			Why: "the answer's o= version is older than the peer's last description (a late copy of an earlier answer)"}
	case c.signaling != SignalingHaveLocalOffer || c.offer == nil || c.making:
		st := c.state
		c.mu.Unlock()
		return &StateError{Op: "SetAnswer", State: st, Why: "the call has no offer awaiting an answer"}
	}
	offer := c.offer
	c.settleReanswerSetupLocked(offer, remote)
	if k, err := remote.Keying(); err == nil {
		if err := c.checkKeying("SetAnswer", k, []sdp.Keying{c.keying}); err != nil {
			c.mu.Unlock()
			return err
		}
	}
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
	if c.started && remote.Origin.SessionID != c.remoteSID {
		if err := c.otherSessionLocked("SetAnswer", remote.Origin.SessionID, remote.Origin.SessionVersion); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	if err := c.checkLaterLocked("SetAnswer", &agreement); err != nil {
		c.mu.Unlock()
		return err
	}
	if err := c.checkAnswerTransport(agreement); err != nil {
		c.mu.Unlock()
		return err
	}
	if c.keepsICELocked(offer) {
		return c.setReofferAnswerLocked(remote, agreement)
	}
	c.signaling, _ = c.signaling.next(opRemoteAnswer)
	c.stopOfferTimerLocked()
	c.offer = nil
	restarting := c.started
	if restarting {
		c.takeSessionLocked(remote.Origin.SessionID)
	}
	c.lastAnswerVersion, c.answerTaken = remote.Origin.SessionVersion, true
	c.local, c.peer = offer, remote
	if restarting {
		c.remoteICE = sdp.ICE{Ufrag: agreement.Remote.Ufrag, Pwd: agreement.Remote.Pwd}
		c.iceReset = false
		c.applyAgreementLocked(agreement)
	} else {
		c.startedLocked(agreement, c.cfg.KeyURI, remote.Origin.SessionID, true)
	}
	c.mu.Unlock()
	if restarting {
		return c.applyRemote(agreement, "SetAnswer")
	}
	c.start(agreement, c.cfg.KeyURI, senderID("answerer", remote), senderID("offerer", offer))
	return nil
}

// Restart begins an ICE restart (RFC 8445 section 2.4) without ending the
// call, for when the path failed or the network changed: it makes new ICE
// credentials, gathers candidates again and returns a new offer for the
// peer, whose Answer recognizes it as a restart of the same call; pass the
// answer to SetAnswer. DTLS, the SRTP keys and the media session carry on
// across the restart; packets sent before the new path is selected are
// lost, as on a network without a route. From the moment ICE restarts
// the call is StateDisconnected (reported to Config.OnStateChange) with a
// zero Path, until ICE selects the new path: StateConnected then.
//
// An offer that no answer meets within Config.RestartTimeout is rolled
// back by itself, and Rollback abandons it at once; either way the call
// returns to SignalingStable and may Restart again or answer the peer's
// offer. If both ends restart at once, Answer resolves the glare (see
// [ErrGlare]), so that restarting on StateDisconnected is safe from both
// ends. While this end holds the call ([Call.Hold]), the restart offer
// says sendonly and the hold goes on.
//
// A Restart that fails before it restarts ICE (the call closed, failed,
// not started or without ICE, another description being made, ctx done on
// entry) changes nothing. ICE restarts first, and gathering the new
// candidates can still fail after that (ctx ends meanwhile, the gathering
// fails): the old credentials and path are gone then, and the call is as
// after a rolled-back restart (see Rollback): SignalingStable, keys and
// media session kept, StateDisconnected and Path zero, no media until
// another restart, from either end, succeeds. Restart may be called again
// at once: it first waits for the gathering the failed one left running
// to end. After Close, also one that ran while Restart gathered, it
// returns ErrClosed and arms no rollback timer.
func (c *Call) Restart(ctx context.Context) (string, error) {
	var (
		keying  sdp.Keying
		keyURI  string
		version uint64
	)
	err := c.begin("Restart", opLocalOffer, func() error {
		if !c.started {
			return &StateError{Op: "Restart", State: c.state, Why: "the call has not started; exchange an offer and an answer first"}
		}
		if c.failErr != nil {
			return &StateError{Op: "Restart", State: c.state, Why: "the call has failed"}
		}
		if err := c.refuseRestartNoICE("Restart"); err != nil {
			return err
		}
		keying, keyURI, version = c.keying, c.keyURI, c.version
		return nil
	})
	if err != nil {
		return "", err
	}
	d, text, err := c.describe(ctx, "Restart", true, false, keying, keyURI, version+1, c.restartOffer)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.describedLocked(); err != nil {
		return "", err
	}
	c.offer, c.version = d, d.Origin.SessionVersion
	c.offerTimer = time.AfterFunc(c.cfg.RestartTimeout, func() { c.offerUnanswered("Restart", d) })
	return text, nil
}

// offerUnanswered rolls back this end's later offer d (of Restart, Hold
// or Resume; op names it) if it still awaits its answer.
func (c *Call) offerUnanswered(op string, d *sdp.Description) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.offer != d || c.making {
		return
	}
	c.log.Info("securecall: offer unanswered; rolled back", "op", op, "after", c.cfg.RestartTimeout)
	c.rollbackLocked()
}

// Rollback abandons this end's offer that awaits its answer (from Offer,
// Restart, Hold or Resume) and returns the call to SignalingStable, so
// that it may make a new offer or answer the peer's. An answer to the
// abandoned offer is then refused. Rolling back a Hold or Resume leaves
// the direction as it was (a peer that took the offer meanwhile is
// brought back in line by the next Hold or Resume). Rolling back a
// restart does not bring the old path back: its ICE credentials are gone,
// so the call stays StateDisconnected until another restart (from either
// end) carries media again, and Answer refuses an offer that keeps the
// ICE session; the keys and the media session stay.
// Rollback fails with a *StateError when there is no offer to abandon.
func (c *Call) Rollback() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.signaling != SignalingHaveLocalOffer || c.offer == nil || c.making:
		return &StateError{Op: "Rollback", State: c.state, Why: "the call has no offer awaiting an answer"}
	}
	c.rollbackLocked()
	return nil
}

// rollbackLocked drops the pending local offer (c.mu held).
func (c *Call) rollbackLocked() {
	c.stopOfferTimerLocked()
	c.offer = nil
	c.signaling, _ = c.signaling.next(opRollback)
}

func (c *Call) stopOfferTimerLocked() {
	if c.offerTimer != nil {
		c.offerTimer.Stop()
		c.offerTimer = nil
	}
}

// SignalingState returns where the call's offer/answer exchange is.
func (c *Call) SignalingState() SignalingState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signaling
}

// applyRemote gives ICE the peer's new credentials and candidates after a
// restart.
func (c *Call) applyRemote(a sdp.Agreement, op string) error {
	c.mu.Lock()
	c.remoteICE = sdp.ICE{Ufrag: a.Remote.Ufrag, Pwd: a.Remote.Pwd}
	c.mu.Unlock()
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

// startedLocked records, in the same step as the exchange that started
// the call (c.mu held, the call not closed), what later offers are judged
// by, and counts the connect goroutine of the start that must follow.
func (c *Call) startedLocked(a sdp.Agreement, keyURI string, remoteSID uint64, offerer bool) {
	c.agreement = a
	c.applyAgreementLocked(a)
	c.keyURI = keyURI
	c.remoteSID = remoteSID
	c.remoteICE = sdp.ICE{Ufrag: a.Remote.Ufrag, Pwd: a.Remote.Pwd}
	c.offerer = offerer
	c.started = true
	// The connect goroutine that start runs, counted here, under mu and
	// with the call open: Close sets closed under mu before it waits, so
	// it waits for this one, and none is counted after it waited.
	c.wg.Add(1)
}

// start moves the call to connecting and starts the goroutine that brings
// up ICE, DTLS and the media session. The ICE role is the agreement's: the
// offerer controls unless it is Lite and the answerer is not (RFC 8445
// section 6.1.1). startedLocked has counted the goroutine in wg.
func (c *Call) start(a sdp.Agreement, keyURI, remoteID, localID string) {
	c.setState(StateConnecting)
	for _, cand := range a.Remote.Candidates {
		if err := c.ice.AddRemoteCandidate(cand); err != nil {
			c.log.Debug("securecall: remote candidate skipped", "err", err)
		}
	}
	go func() { // counted in wg by startedLocked
		defer c.wg.Done()
		defer close(c.ready)
		err := c.connect(a, keyURI, localID, remoteID)
		c.mu.Lock()
		c.connectErr = err
		c.mu.Unlock()
		if err != nil {
			if c.ctx.Err() == nil {
				c.fail(err)
			}
			return
		}
		c.setState(StateConnected)
		c.silence.start(c)
	}()
}

func (c *Call) connect(a sdp.Agreement, keyURI, localID, remoteID string) error {
	conn, err := c.connectTransport(a)
	if err != nil {
		return fmt.Errorf("securecall: connect: %w", err)
	}
	mcfg := c.cfg.Media.session()
	mcfg.Keying = a.Keying
	mcfg.Profiles = c.cfg.Profiles
	mcfg.Certificate = c.cfg.Certificate
	mcfg.RemoteFingerprints = a.RemoteFingerprints
	mcfg.HandshakeRTT = c.ice.Path().RTT
	mcfg.RTCP = c.rtcpConfig(a)
	mcfg.Logger = c.cfg.Logger
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
	if on := c.cfg.Media.OnRTP; on != nil {
		// The agreed types travel in the closure, which the push path
		// touches anyway: no cold line of the Call per packet.
		agreed, outside := c.sip.agreed, &c.sip.outsidePT
		mcfg.OnRTP = func(h media.RTPHeader, payload []byte) {
			agreed.count(h.PayloadType, outside) // as ReadRTP counts
			on(h, payload)
		}
	}
	c.attestConfig(&mcfg, a.Keying)
	s, err := media.NewSession(c.ctx, conn, mcfg)
	if err != nil {
		return fmt.Errorf("securecall: connect: %w", err)
	}
	if err := c.startAttesting(s, a.Keying); err != nil {
		s.Close()
		return err
	}
	c.mu.Lock()
	if c.closed || c.failErr != nil {
		c.mu.Unlock()
		s.Close()
		if c.failErr != nil {
			return c.failErr
		}
		return ErrClosed
	}
	c.session = s
	c.publishMediaLocked()
	c.mu.Unlock()
	return nil
}

// fail ends the call with cause: Context is cancelled with it, the call
// moves to StateFailed, and the media session is closed so that reads and
// writes return cause. Only the first cause counts; a closed call does not
// fail.
func (c *Call) fail(cause error) { c.failWith(cause, false) }

// failFromSession is fail for callbacks that run on a goroutine of the
// media session (its reader, its key watcher): everything but closing the
// session happens at once, and the session is closed on a goroutine of
// the call's own, which Close joins, since a session cannot wait for the
// goroutine that closes it.
func (c *Call) failFromSession(cause error) { c.failWith(cause, true) }

func (c *Call) failWith(cause error, closeLater bool) {
	c.mu.Lock()
	if c.closed || c.failErr != nil {
		c.mu.Unlock()
		return
	}
	c.failErr = cause
	c.publishMediaLocked()
	s := c.session
	c.stopOfferTimerLocked()
	c.wg.Add(1) // Close waits for the teardown below
	c.mu.Unlock()
	c.log.Warn("securecall: call failed", "err", cause)
	c.cancel(cause)
	c.silence.stop()
	c.setState(StateFailed)
	closeSession := func() {
		defer c.wg.Done()
		if s != nil {
			s.Close()
		}
	}
	if closeLater {
		go closeSession()
		return
	}
	closeSession()
}

// pathAnswering moves a connected call to disconnected when its path stops
// answering and back when it answers again; while ICE has no path since a
// restart (pathLost), a report that a path answers is the old path's,
// late, and the call stays disconnected.
func (c *Call) pathAnswering(up bool) {
	c.mu.Lock()
	switch {
	case !up && c.state == StateConnected:
		c.setStateLocked(StateDisconnected)
	case up && c.state == StateDisconnected:
		c.setStateLocked(StateConnected)
	}
	c.mu.Unlock()
	c.reportStates()
}

// setState records s and reports it to OnStateChange if it is a change
// (see setStateLocked).
func (c *Call) setState(s State) {
	c.mu.Lock()
	c.setStateLocked(s)
	c.mu.Unlock()
	c.reportStates()
}

// stateNote is a change of state for OnStateChange.
type stateNote struct{ from, to State }

// setStateLocked records s (c.mu held) for reportStates, if it is a
// change. Failed and closed are final, and a call whose ICE has no path
// since it restarted is disconnected, not connected.
func (c *Call) setStateLocked(s State) {
	if s == StateConnected && c.pathLost {
		s = StateDisconnected
	}
	old := c.state
	if old == s || old == StateClosed || (old == StateFailed && s != StateClosed) {
		return
	}
	c.state = s
	c.stateNotes = append(c.stateNotes, stateNote{from: old, to: s})
}

// reportStates reports the recorded changes to OnStateChange, in order,
// unless another goroutine is reporting: that one reports these too, once
// its report returns. So OnStateChange never runs concurrently with
// itself, and a change it makes itself (a Restart or an Answer from
// inside OnStateChange) is reported after it returns, without waiting for
// it.
func (c *Call) reportStates() {
	c.mu.Lock()
	if c.reporting != nil || len(c.stateNotes) == 0 {
		c.mu.Unlock()
		return
	}
	done := make(chan struct{})
	c.reporting = done
	for len(c.stateNotes) > 0 {
		n := c.stateNotes[0]
		c.stateNotes = c.stateNotes[1:]
		c.mu.Unlock()
		c.log.Debug("securecall: state", "from", n.from, "to", n.to)
		if c.cfg.OnStateChange != nil {
			c.cfg.OnStateChange(n.to)
		}
		c.mu.Lock()
	}
	c.stateNotes, c.reporting = nil, nil
	c.mu.Unlock()
	close(done)
}

// awaitReports waits until the changes recorded so far have been
// reported, by this goroutine or another.
func (c *Call) awaitReports() {
	c.reportStates()
	c.mu.Lock()
	done := c.reporting
	c.mu.Unlock()
	if done != nil {
		<-done
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
	if s := c.live.Load(); s != nil {
		// One load of the Call's own line: a packet's write at a
		// gateway finds the Call cold, and the mediaRef would be a
		// second cold line.
		return s, nil
	}
	r := c.mediaRef.Load()
	if r == nil {
		return nil, ErrNotConnected
	}
	return r.s, r.err
}

// mediaRef is what the media methods use: the session, or why there is
// none. It is published under mu whenever closed, failErr or session
// changes, so that a packet's read or write takes no lock of the Call
// (which its reader and writer goroutines would otherwise pass between
// cores at every packet).
type mediaRef struct {
	s   *media.Session
	err error
}

func (c *Call) publishMediaLocked() {
	r := &mediaRef{s: c.session}
	switch {
	case c.closed:
		r.s, r.err = nil, ErrClosed
	case c.failErr != nil:
		r.s, r.err = nil, c.failErr
	case c.session == nil:
		r.err = ErrNotConnected
	}
	c.mediaRef.Store(r)
	if r.err == nil {
		c.live.Store(r.s)
	} else {
		c.live.Store(nil)
	}
}

// mediaErr turns an error of the media session that the end of the call
// caused into that end's cause: ErrClosed, or why the call failed.
func (c *Call) mediaErr(err error) error {
	if err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.failErr != nil:
		return c.failErr
	}
	return err
}

// WriteRTP encrypts and sends one RTP packet with header h. After the call
// failed it returns the reason (see Context). While the agreed direction
// does not let this end send (the peer holds the call: see
// [Call.Direction]), it sends nothing, counts the packet in
// Stats.RTPWithheld and returns nil.
func (c *Call) WriteRTP(h media.RTPHeader, payload []byte) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	if c.withhold() {
		return nil
	}
	return c.mediaErr(s.WriteRTP(h, payload))
}

// ReadRTP receives and decrypts the next RTP packet, copies its payload
// into payload and returns its header and the payload's length. After the
// call failed it returns the reason (see Context). With MediaConfig.OnRTP
// set, packets go there instead and ReadRTP returns an error wrapping
// media.ErrRTPHandled.
func (c *Call) ReadRTP(payload []byte) (media.RTPHeader, int, error) {
	s, err := c.media()
	if err != nil {
		return media.RTPHeader{}, 0, err
	}
	h, n, err := s.ReadRTP(payload)
	if err == nil {
		c.sip.notePayloadType(h.PayloadType)
	}
	return h, n, c.mediaErr(err)
}

// WriteRTCP encrypts and sends one compound RTCP packet.
func (c *Call) WriteRTCP(pkt []byte) error {
	s, err := c.media()
	if err != nil {
		return err
	}
	return c.mediaErr(s.WriteRTCP(pkt))
}

// ReadRTCP receives and decrypts the next compound RTCP packet into buf.
func (c *Call) ReadRTCP(buf []byte) (int, error) {
	s, err := c.media()
	if err != nil {
		return 0, err
	}
	n, err := s.ReadRTCP(buf)
	return n, c.mediaErr(err)
}

// SetReadDeadline sets the deadline for ReadRTP and ReadRTCP, as on a
// net.Conn: a read blocked past t returns an error for which
// errors.Is(err, os.ErrDeadlineExceeded) holds. The zero time means no
// deadline. It applies once the call is connected. With MediaConfig.OnRTP
// set it bounds ReadRTCP only: delivery to OnRTP goes on.
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
// A later exchange keeps it while it lists it, and may switch the call to
// another codec at the same RTP clock rate (see [Call.Answer]).
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
// Its RTT is refreshed while media flows (see [Call.Stats]).
func (c *Call) Path() ice.Path { return c.path() }

// Context returns a context that is cancelled when the call ends; its
// cause (context.Cause) is ErrClosed after Close, or the reason the call
// failed: for a path that stopped answering for good, an error wrapping
// ice.ErrNoPath.
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
	c.publishMediaLocked()
	c.signaling, _ = c.signaling.next(opClose)
	c.stopOfferTimerLocked()
	failed := c.failErr != nil
	c.mu.Unlock()
	c.cancel(ErrClosed)
	c.silence.stop()
	// Media first, while ICE still carries it; a session that the connect
	// goroutine completes after this point is closed by that goroutine.
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	var mediaErr error
	if s != nil && !failed { // a failed call closed its session already
		mediaErr = s.Close()
	}
	iceErr := c.ice.Close()
	directErr := c.closeNoICE()
	c.wg.Wait()
	c.setState(StateClosed)
	c.awaitReports() // StateClosed too, if another goroutine reports
	return errors.Join(mediaErr, iceErr, directErr)
}
