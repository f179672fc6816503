package ice

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"
	"github.com/pion/transport/v3"
	"github.com/pion/transport/v3/stdnet"

	"github.com/securecall/securecall/internal/pionlog"
	"github.com/securecall/securecall/sdp"
)

// Internal tuning that Config does not expose; doc.go explains each.
const (
	stunGatherTimeout  = 2 * time.Second
	maxBindingRequests = 15
)

// Transport is one ICE agent: it gathers local candidates, takes the
// peer's, runs connectivity checks and hands back the selected path as a
// net.Conn. Make it with NewTransport; its methods may be called from any
// goroutine.
type Transport struct {
	cfg     Config
	agent   atomic.Pointer[pice.Agent] // replaced by an ICE restart after park
	acfg    *pice.AgentConfig          // on an Endpoint: what the agent was made with, for a restart after park
	red     *redactor
	rtt     *rttMeter
	relays  *relayIndex
	servers map[string]string // "udp|host:port" or "tcp|host:port" -> URL of a TURN server
	tcpMux  pice.TCPMux
	tcpLn   net.Listener
	cancel  context.CancelFunc // stops TURN dials
	dropped atomic.Uint64      // malformed STUN messages dropped by the guard
	comp    component          // ICE component 2 for RTCP apart (rtcp.go)
	roles   *roleConflicts     // Lite only: answers role conflicts (roleconflict.go)
	limit   candidateLimit     // bounds the peer's candidates and the check list
	site    siteNetworks       // DirectOnly: the remote addresses allowed
	refused refusals           // DirectOnly: the last address refused

	mu     sync.Mutex
	local  Credentials
	remote Peer
	// gatherCh receives pion's candidates while a Gather call runs.
	gatherCh   chan pice.Candidate
	gatherDone chan struct{}
	// gatherEnd is closed when pion reports the end of the gathering
	// that Gather started last, whether or not a Gather still waits.
	gatherEnd chan struct{}
	started   bool
	// controlling is the role Connect took; read by the role-conflict
	// layer, which answers only for a controlled Lite agent.
	controlling bool
	// reports delivers OnPathChange, OnConnectivity and OnFailed in
	// order (report.go). everUp, wasUp and failReported track what they
	// last reported; only the report being delivered touches them.
	reports       reportQueue
	everUp, wasUp bool
	connectOK     atomic.Bool   // Connect has returned its path: the first connection
	failReported  bool          // OnFailed has been called
	failed        chan struct{} // closed when the checks fail
	// gen is the restart generation: Restart adds one (under mu, once
	// pion's agent has dropped the old pair). A report of an older
	// generation is not delivered.
	gen atomic.Uint64
	// The restart gate, under gateMu: what pion's state notifier may
	// still deliver from before the last Restart, and that Restart's
	// timer.
	gateMu sync.Mutex
	// lastState is the last state the current pion agent reported.
	lastState pice.ConnectionState
	// awaitMarker: pion's Checking for the last Restart is still to
	// come; the states its notifier delivers before it are the old
	// generation's.
	awaitMarker bool
	// restarting: no pair has been selected since the Restart of
	// generation restartGen; its timer (stopTimer) fails it when none is
	// within DisconnectedTimeout plus FailedTimeout.
	restarting bool
	restartGen uint64
	answered   bool        // SetRemote gave the peer's credentials for that restart
	stopTimer  func() bool // the restart timer's Stop; nil when none is armed
	// afterFunc is the clock seam for the restart timer: time.AfterFunc
	// (tests replace it before Restart).
	afterFunc  func(d time.Duration, f func()) (stop func() bool)
	closing    chan struct{} // closed by Close
	failedOnce sync.Once
	conn       pathConn
	ep         *endpointUse // on a shared Endpoint; nil otherwise
	// On an Endpoint, once connected, the Transport is parked: its pion
	// agent is closed and consent runs on the Endpoint (endpoint_consent.go).
	consent   *consentSession
	parked    bool
	redial    bool           // a restart after park: SetRemote starts the checks
	bg        sync.WaitGroup // the redial goroutine
	path      Path
	peerLocal *CandidateInfo // what the peer attested; nil: unattested
	closed    bool
	relayErr  string // pion's last complaint about a TURN server
	wantRelay bool   // TURN servers are configured and the policy uses them
}

// NewTransport checks cfg and makes a Transport. It does no network I/O;
// when cfg.Networks has TCP4 or TCP6 it opens the ICE-TCP listener.
func NewTransport(cfg Config) (*Transport, error) {
	return newTransport(cfg, nil)
}

// newTransport makes a Transport; creds, when set, are the local
// credentials (those of the RTP component, for the RTCP one).
func newTransport(cfg Config, creds *Credentials) (*Transport, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:     cfg,
		red:     &redactor{},
		rtt:     &rttMeter{},
		relays:  &relayIndex{},
		servers: make(map[string]string),
		failed:  make(chan struct{}),
		closing: make(chan struct{}),
		limit:   candidateLimit{maxRemote: cfg.MaxRemoteCandidates, maxPairs: cfg.MaxCandidatePairs, log: cfg.Logger},
		afterFunc: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
	}
	t.reports.init(t.deliver)
	var (
		urls       []*stun.URI
		parsed     []*stun.URI
		tlsServers = make(map[string]bool)
		turnUDP    = make(map[string]bool) // host:port of turn: servers over UDP
	)
	for _, s := range cfg.Servers {
		u, err := s.parse()
		if err != nil {
			return nil, err
		}
		t.red.add(s.Credential)
		parsed = append(parsed, u)
		if u.Scheme == stun.SchemeTypeTURN && u.Proto == stun.ProtoTypeUDP && cfg.Policy != DirectOnly {
			turnUDP[hostPort(u)] = true
		}
	}
	for i, u := range parsed {
		s := cfg.Servers[i]
		isTURN := u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS
		switch {
		case cfg.Policy == DirectOnly && isTURN:
			continue // relays are never contacted
		case cfg.Policy == RelayOnly && !isTURN:
			continue // STUN would only reveal the server-reflexive address
		case !isTURN && turnUDP[hostPort(u)]:
			// pion asks every server for the server-reflexive address; a
			// STUN URL for a TURN server already listed would open a
			// second socket for the same answer.
			continue
		}
		if isTURN {
			proto := "udp"
			if u.Proto == stun.ProtoTypeTCP {
				proto = "tcp"
			}
			t.servers[proto+"|"+hostPort(u)] = s.URL
			if u.Scheme == stun.SchemeTypeTURNS {
				tlsServers[hostPort(u)] = true
			}
		}
		urls = append(urls, u)
	}
	t.wantRelay = len(t.servers) > 0 && cfg.Policy != DirectOnly && !cfg.Lite
	if cfg.Policy == RelayOnly && len(urls) == 0 {
		return nil, errors.New("ice: RelayOnly needs at least one turn: or turns: server")
	}

	if creds == nil {
		c, err := newCredentials()
		if err != nil {
			return nil, err
		}
		creds = &c
	}
	t.local = *creds
	t.red.add(creds.Pwd)

	var (
		ifs []*transport.Interface
		err error
	)
	if cfg.Endpoint != nil {
		// Only the Endpoint's address is gathered: its Transports share
		// one interface list (saves a netlink dump and ~1 KB per call).
		ifs, err = cfg.Endpoint.interfaceList()
	} else {
		ifs, err = interfaces()
	}
	if err != nil {
		return nil, fmt.Errorf("ice: network interfaces: %w", err)
	}
	// A zero stdnet.Net: its socket methods wrap package net directly, and
	// guardNet serves the interface list.
	gnet := &guardNet{Net: &stdnet.Net{}, ifs: ifs, rtt: t.rtt, relays: t.relays, dropped: func() {
		t.dropped.Add(1)
		t.cfg.Logger.Debug("ice: the guard dropped a datagram pion must not parse")
	}}
	var pnet transport.Net = gnet
	if cfg.Policy == DirectOnly {
		t.site = siteNetworks(cfg.SiteNetworks)
		pnet = &siteNet{Net: gnet, g: t.siteGuard()}
	}
	dctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel

	acfg := &pice.AgentConfig{
		Urls:             urls,
		LocalUfrag:       creds.Ufrag,
		LocalPwd:         creds.Pwd,
		MulticastDNSMode: pice.MulticastDNSModeDisabled,
		LoggerFactory:    &pionlog.Factory{Log: cfg.Logger, Prefix: "ice: ", Redact: t.red.redact, Problem: t.notePionProblem},
		Lite:             cfg.Lite,
		Net:              pnet,
		ProxyDialer:      &turnDialer{tlsConfig: cfg.TLSConfig, tlsServers: tlsServers, ctx: dctx, relays: t.relays, guard: gnet},
		// Loopback addresses are gathered only when the application's
		// IPFilter accepts them.
		IncludeLoopback:        cfg.IPFilter != nil,
		DisconnectedTimeout:    ptr(cfg.DisconnectedTimeout),
		FailedTimeout:          ptr(cfg.FailedTimeout),
		KeepaliveInterval:      ptr(cfg.KeepaliveInterval),
		CheckInterval:          ptr(checkInterval),
		HostAcceptanceMinWait:  ptr(time.Duration(0)),
		SrflxAcceptanceMinWait: ptr(srflxWait),
		PrflxAcceptanceMinWait: ptr(cfg.PeerReflexiveWait),
		RelayAcceptanceMinWait: ptr(cfg.RelayWait),
		STUNGatherTimeout:      ptr(stunGatherTimeout),
		MaxBindingRequests:     ptr(uint16(maxBindingRequests)),
	}
	if cfg.Lite {
		t.roles = &roleConflicts{t: t}
		acfg.Net = &roleNet{guardNet: gnet, roles: t.roles}
	}
	if cfg.InterfaceFilter != nil {
		acfg.InterfaceFilter = cfg.InterfaceFilter
	}
	if cfg.UDPMux != nil {
		acfg.UDPMux = &transportMux{m: cfg.UDPMux, n: gnet, ipFilter: cfg.IPFilter, site: t.siteGuard()}
	}
	if cfg.Endpoint != nil {
		u, err := cfg.Endpoint.attach(gnet, cfg.IPFilter, t.siteGuard())
		if err != nil {
			cancel()
			return nil, err
		}
		t.ep = u
		u.setLocal(*creds)
		acfg.UDPMux = u
	}
	if cfg.IPFilter != nil {
		f := cfg.IPFilter
		acfg.IPFilter = func(ip net.IP) bool {
			a, ok := netip.AddrFromSlice(ip)
			return ok && f(a.Unmap())
		}
	}
	for _, n := range cfg.Networks {
		acfg.NetworkTypes = append(acfg.NetworkTypes, pionNetwork(n))
	}
	switch {
	case cfg.Lite:
		acfg.CandidateTypes = []pice.CandidateType{pice.CandidateTypeHost}
	case cfg.Policy == DirectOnly:
		acfg.CandidateTypes = []pice.CandidateType{pice.CandidateTypeHost, pice.CandidateTypeServerReflexive}
	case cfg.Policy == RelayOnly:
		acfg.CandidateTypes = []pice.CandidateType{pice.CandidateTypeRelay}
	default:
		acfg.CandidateTypes = []pice.CandidateType{pice.CandidateTypeHost, pice.CandidateTypeServerReflexive, pice.CandidateTypeRelay}
	}
	if len(urls) == 0 && !cfg.Lite {
		acfg.CandidateTypes = []pice.CandidateType{pice.CandidateTypeHost}
	}
	for _, a := range cfg.PublicAddresses {
		acfg.NAT1To1IPs = append(acfg.NAT1To1IPs, a.String())
	}
	if len(acfg.NAT1To1IPs) > 0 {
		acfg.NAT1To1IPCandidateType = pice.CandidateTypeHost
	}
	if err := t.listenTCP(acfg, gnet); err != nil {
		cancel()
		return nil, err
	}
	if t.ep != nil {
		t.acfg = acfg
	}
	if err := t.newAgent(acfg); err != nil {
		t.closeTCP()
		cancel()
		if t.ep != nil {
			t.ep.e.detach(t.ep)
		}
		return nil, err
	}
	return t, nil
}

// ag returns the current pion agent; nil once the Transport is parked
// (until an ICE restart makes a new one).
func (t *Transport) ag() *pice.Agent { return t.agent.Load() }

// errParked is what the agent's methods that need pion fail with while
// the Transport is parked on its Endpoint.
var errParked = errors.New("connected on an Endpoint: ICE is finished until Restart")

// newAgent makes the pion agent and installs the Transport's handlers.
func (t *Transport) newAgent(acfg *pice.AgentConfig) error {
	agent, err := pice.NewAgent(acfg)
	if err != nil {
		return fmt.Errorf("ice: %w", err)
	}
	t.agent.Store(agent)
	if err := agent.OnCandidate(t.onCandidate); err != nil {
		_ = agent.GracefulClose()
		return fmt.Errorf("ice: %w", err)
	}
	if err := agent.OnSelectedCandidatePairChange(t.onSelected); err != nil {
		_ = agent.GracefulClose()
		return fmt.Errorf("ice: %w", err)
	}
	if err := agent.OnConnectionStateChange(func(s pice.ConnectionState) { t.agentState(agent, s) }); err != nil {
		_ = agent.GracefulClose()
		return fmt.Errorf("ice: %w", err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// check reports the first problem with a Config that has its defaults.
func (c Config) check() error {
	switch c.Policy {
	case PreferDirect, DirectOnly, RelayOnly:
	default:
		return fmt.Errorf("ice: unknown policy %d", int(c.Policy))
	}
	if c.Lite && c.Policy == RelayOnly {
		return errors.New("ice: a Lite transport gathers host candidates only and cannot be RelayOnly")
	}
	if c.Lite && len(c.Servers) > 0 {
		return errors.New("ice: a Lite transport uses no STUN or TURN servers; leave Servers empty")
	}
	if c.MaxRemoteCandidates < 0 || c.MaxCandidatePairs < 0 {
		return errors.New("ice: MaxRemoteCandidates and MaxCandidatePairs must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RelayWait", c.RelayWait}, {"PeerReflexiveWait", c.PeerReflexiveWait},
		{"ConnectTimeout", c.ConnectTimeout}, {"DisconnectedTimeout", c.DisconnectedTimeout},
		{"FailedTimeout", c.FailedTimeout}, {"KeepaliveInterval", c.KeepaliveInterval},
	} {
		if d.v < 0 {
			return fmt.Errorf("ice: %s must not be negative, got %v", d.name, d.v)
		}
	}
	for _, n := range c.Networks {
		if n < UDP4 || n > TCP6 {
			return fmt.Errorf("ice: unknown network %d", int(n))
		}
	}
	for _, a := range c.PublicAddresses {
		if !a.IsValid() {
			return errors.New("ice: PublicAddresses has an invalid address")
		}
	}
	if err := checkSiteNetworks(c.SiteNetworks); err != nil {
		return err
	}
	if c.Endpoint != nil {
		if err := c.checkEndpoint(); err != nil {
			return err
		}
	}
	if len(c.PublicAddresses) > 0 && c.Policy == RelayOnly {
		return errors.New("ice: PublicAddresses maps host candidates, which RelayOnly never gathers")
	}
	return nil
}

func pionNetwork(n Network) pice.NetworkType {
	switch n {
	case UDP6:
		return pice.NetworkTypeUDP6
	case TCP4:
		return pice.NetworkTypeTCP4
	case TCP6:
		return pice.NetworkTypeTCP6
	}
	return pice.NetworkTypeUDP4
}

// listenTCP opens the ICE-TCP listener when a TCP network is configured.
func (t *Transport) listenTCP(acfg *pice.AgentConfig, guard *guardNet) error {
	var v4, v6 bool
	for _, n := range t.cfg.Networks {
		v4 = v4 || n == TCP4
		v6 = v6 || n == TCP6
	}
	if !v4 && !v6 {
		return nil
	}
	network, addr := "tcp", ":0"
	switch {
	case v4 && !v6:
		network, addr = "tcp4", "0.0.0.0:0"
	case v6 && !v4:
		network, addr = "tcp6", "[::]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("ice: ICE-TCP listener: %w", err)
	}
	if t.cfg.Policy == DirectOnly {
		ln = &siteListener{Listener: ln, g: t.siteGuard()}
	}
	t.tcpLn = ln
	t.tcpMux = pice.NewTCPMuxDefault(pice.TCPMuxParams{
		Listener:       &guardListener{Listener: ln, n: guard},
		Logger:         (&pionlog.Factory{Log: t.cfg.Logger, Prefix: "ice: ", Redact: t.red.redact}).NewLogger("tcpmux"),
		ReadBufferSize: 64,
	})
	acfg.TCPMux = t.tcpMux
	return nil
}

func (t *Transport) closeTCP() {
	if t.tcpMux != nil {
		_ = t.tcpMux.Close()
	}
}

// newCredentials returns a random ufrag (48 bits) and pwd (128 bits),
// above the minimums of RFC 8445 section 5.3.
func newCredentials() (Credentials, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
	b := make([]byte, 8+24)
	if _, err := rand.Read(b); err != nil {
		return Credentials{}, fmt.Errorf("ice: random: %w", err)
	}
	for i := range b {
		b[i] = alphabet[b[i]&63]
	}
	return Credentials{Ufrag: string(b[:8]), Pwd: string(b[8:])}, nil
}

// LocalCredentials returns the local ufrag and password to put in the SDP.
// They change only with Restart.
func (t *Transport) LocalCredentials() Credentials {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.local
}

// onCandidate runs on pion's notifier goroutine and hands candidates to the
// Gather call that is waiting for them.
func (t *Transport) onCandidate(c pice.Candidate) {
	t.mu.Lock()
	ch, done := t.gatherCh, t.gatherDone
	if c == nil && t.gatherEnd != nil {
		close(t.gatherEnd)
		t.gatherEnd = nil
	}
	t.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- c:
	case <-done:
	}
}

// Gather gathers local candidates. It calls fn with each one, on the
// calling goroutine, as soon as it is found (for trickle ICE), and returns
// when gathering is complete or ctx is done: once ctx is done, with its
// error, even when the gathering completed at the same moment, and
// without starting when ctx is done already. Gather runs once per
// Transport and again after each Restart.
func (t *Transport) Gather(ctx context.Context, fn func(sdp.Candidate)) error {
	ch := make(chan pice.Candidate)
	done := make(chan struct{})
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return fmt.Errorf("ice: gather: %w", net.ErrClosed)
	case t.gatherCh != nil:
		t.mu.Unlock()
		return errors.New("ice: gather: already gathering")
	}
	t.gatherCh, t.gatherDone = ch, done
	t.mu.Unlock()
	defer func() {
		close(done)
		t.mu.Lock()
		t.gatherCh, t.gatherDone = nil, nil
		t.mu.Unlock()
	}()
	t.mu.Lock()
	t.relayErr = ""
	t.mu.Unlock()
	ag := t.ag()
	if ag == nil {
		return fmt.Errorf("ice: gather: %w", errParked)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ice: gather: %w", err)
	}
	end := make(chan struct{})
	t.mu.Lock()
	t.gatherEnd = end
	t.mu.Unlock()
	if err := ag.GatherCandidates(); err != nil {
		t.mu.Lock()
		if t.gatherEnd == end {
			t.gatherEnd = nil
		}
		t.mu.Unlock()
		return fmt.Errorf("ice: gather: %w", err)
	}
	var relays int
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("ice: gather: %w", ctx.Err())
		case <-t.closing:
			return fmt.Errorf("ice: gather: %w", net.ErrClosed)
		case pc := <-ch:
			// select picks at random among ready cases: a ctx that ended
			// meanwhile (in fn, say) must win over the next candidate
			// and over the end of gathering, every time.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("ice: gather: %w", err)
			}
			if pc == nil {
				if err := t.checkRelays(relays); err != nil {
					return err
				}
				return t.comp.gather(ctx, fn)
			}
			c, ok := t.localCandidate(pc)
			if !ok {
				continue
			}
			if c.Type == sdp.CandidateRelay {
				relays++
			}
			if fn != nil {
				fn(c)
			}
		}
	}
}

// checkRelays reports a gathering that produced no relay candidate though
// TURN servers are configured: an error under RelayOnly, which then has
// nothing to offer, and a warning otherwise.
func (t *Transport) checkRelays(n int) error {
	if n > 0 || !t.wantRelay {
		return nil
	}
	t.mu.Lock()
	why := t.relayErr
	t.mu.Unlock()
	if why == "" {
		why = "no TURN server answered"
	}
	if t.cfg.Policy == RelayOnly {
		return fmt.Errorf("ice: gather: no relay candidate under the RelayOnly policy: %s", why)
	}
	t.cfg.Logger.Warn("ice: no relay candidate; calls that need a relay will fail", "reason", why)
	return nil
}

// notePionProblem keeps pion's last warning about a TURN server, which is
// the only report pion gives of why an allocation failed.
func (t *Transport) notePionProblem(msg string) {
	if !strings.Contains(msg, "TURN") && !strings.Contains(msg, "relay") {
		return
	}
	t.mu.Lock()
	t.relayErr = msg
	t.mu.Unlock()
}

// localCandidate converts a gathered candidate and applies the policy a
// second time: whatever pion gathered, RelayOnly sends only relay
// candidates and never their base, and DirectOnly never sends a relay.
func (t *Transport) localCandidate(pc pice.Candidate) (sdp.Candidate, bool) {
	c, err := sdp.ParseCandidate("candidate:" + pc.Marshal())
	if err != nil {
		t.cfg.Logger.Warn("ice: skipped a local candidate pion produced", "err", err)
		return sdp.Candidate{}, false
	}
	if c.RelatedAddress != "" {
		// The related address of a reflexive or relay candidate names a
		// local socket (pion gives its port); the peer has no use for it
		// (RFC 8445 section 5.1.3 leaves it informational), so it is
		// hidden, as browsers do.
		c.RelatedAddress, c.RelatedPort = "0.0.0.0", 0
	}
	t.comp.local(&c)
	switch t.cfg.Policy {
	case RelayOnly:
		if c.Type != sdp.CandidateRelay {
			return sdp.Candidate{}, false
		}
	case DirectOnly:
		if c.Type == sdp.CandidateRelay {
			return sdp.Candidate{}, false
		}
	}
	return c, true
}

// AddRemoteCandidate adds one of the peer's candidates, from its SDP or
// trickled. It may be called before or during Connect. Candidates with a
// host name (mDNS) are refused, as are relay candidates under DirectOnly.
// Candidates beyond Config.MaxRemoteCandidates or Config.MaxCandidatePairs
// are dropped without an error and counted in Stats. AddRemoteCandidate
// waits (a bounded number of rounds of pion's agent loop, which takes it
// in the first round or two) until the candidate is in the check list, so
// that a check from the address of a candidate added before Connect meets
// it as signalled (not as prflx).
func (t *Transport) AddRemoteCandidate(c sdp.Candidate) error {
	if routed, err := t.comp.remote(&c); routed {
		return err
	}
	if c.Component != 1 {
		return fmt.Errorf("ice: remote candidate %s: component %d is not used (rtcp-mux only)", c.Foundation, c.Component)
	}
	ap, ok := c.AddrPort()
	if !ok {
		return fmt.Errorf("ice: remote candidate %s: address %q is not an IP address (mDNS is not supported)", c.Foundation, c.Address)
	}
	if err := t.remoteCandidateAllowed(c, ap); err != nil {
		t.refused.note(err)
		return fmt.Errorf("ice: remote candidate %s: %w", c.Foundation, err)
	}
	pc, err := pice.UnmarshalCandidate(strings.TrimPrefix(c.String(), "candidate:"))
	if err != nil {
		return fmt.Errorf("ice: remote candidate %s: %w", c.Foundation, err)
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return fmt.Errorf("ice: add remote candidate: %w", net.ErrClosed)
	}
	ag := t.ag()
	if ag == nil {
		// Parked: the path is chosen and pion (which would not renominate
		// either) is gone; a late trickled candidate changes nothing.
		return nil
	}
	key := fmt.Sprint(pc.Component(), " ", pc.NetworkType(), " ", pc.Type(), " ", pc.Address(), " ", pc.Port())
	if !t.limit.admit(key, pc.NetworkType(), t.localsByType()) {
		return nil
	}
	if err := ag.AddRemoteCandidate(pc); err != nil {
		return fmt.Errorf("ice: remote candidate %s: %w", c.Foundation, err)
	}
	if pc.TCPType() != pice.TCPTypeActive { // pion does not keep those
		awaitRemote(ag, pc)
	}
	return nil
}

// awaitRemote returns once pion's agent holds the remote candidate pc.
// pion adds it on a goroutine of its own; without the wait, a candidate
// added before Connect could reach the check list after the peer's first
// check, and the signalled address was then learnt as prflx. Each look is
// a task on the agent's loop, where the adding goroutine queues first; the
// wait is bounded, and ends when the agent is closed (or restarted, which
// empties the list).
func awaitRemote(ag *pice.Agent, pc pice.Candidate) {
	for range 64 {
		cs, err := ag.GetRemoteCandidates()
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Equal(pc) {
				return
			}
		}
		runtime.Gosched()
	}
}

// Connect runs connectivity checks with the peer and returns a net.Conn
// over the selected path once one is nominated. controlling says which
// side controls when neither is Lite (the offerer controls); a Lite side
// is always controlled and its full peer controls (RFC 8445 section 6.1.1).
// Connect fails with an error wrapping ErrNoPath when no pair works within
// Config.ConnectTimeout, and with ctx's error when ctx is done first. It
// may be called once per Transport; after Restart the returned net.Conn
// stays in use.
func (t *Transport) Connect(ctx context.Context, remote Peer, controlling bool) (net.Conn, error) {
	if remote.Ufrag == "" || remote.Pwd == "" {
		return nil, errors.New("ice: connect: the peer's ufrag and pwd are required")
	}
	// Component 2, when enabled, runs its checks at the same time.
	type result struct {
		pc  *pice.Conn
		err error
	}
	var rtcp chan result
	rctx, cancelRTCP := context.WithCancel(ctx)
	defer cancelRTCP()
	if s := t.comp.get(); s != nil {
		rtcp = make(chan result, 1)
		go func() {
			pc, err := s.connectAgent(rctx, remote, controlling)
			rtcp <- result{pc, err}
		}()
	}
	pc, err := t.connectAgent(ctx, remote, controlling)
	if err != nil {
		cancelRTCP()
		if rtcp != nil {
			<-rtcp
		}
		return nil, err
	}
	t.notePath()
	var c pathConn
	if t.ep != nil {
		// EnableRTCPComponent refuses a Transport on an Endpoint, so
		// there is no component 2 here.
		if err := t.claimSelected(); err != nil {
			return nil, fmt.Errorf("ice: connect: %w", err)
		}
		c = t.ep.media
	} else {
		nc := newConn(pc)
		if rtcp != nil {
			r := <-rtcp
			if r.err != nil {
				nc.Close()
				return nil, fmt.Errorf("ice: RTCP component: %w", r.err)
			}
			t.comp.join(nc, r.pc)
		}
		c = nc
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, fmt.Errorf("ice: connect: %w", net.ErrClosed)
	}
	t.conn = c
	t.connectOK.Store(true)
	controlling = t.controlling // as connectAgent settled it (Lite)
	t.mu.Unlock()
	if t.ep != nil {
		if err := t.park(controlling); err != nil {
			return nil, fmt.Errorf("ice: connect: %w", err)
		}
	}
	return c, nil
}

// connectAgent runs this agent's connectivity checks and returns pion's
// connection over the selected pair.
func (t *Transport) connectAgent(ctx context.Context, remote Peer, controlling bool) (*pice.Conn, error) {
	switch {
	case t.cfg.Lite && !remote.Lite:
		controlling = false
	case !t.cfg.Lite && remote.Lite:
		controlling = true
	}
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return nil, fmt.Errorf("ice: connect: %w", net.ErrClosed)
	case t.started:
		t.mu.Unlock()
		return nil, errors.New("ice: connect: already called")
	}
	t.started = true
	t.controlling = controlling
	t.remote = remote
	t.mu.Unlock()
	t.red.add(remote.Pwd)
	if t.ep != nil {
		t.ep.setPeer(remote)
	}

	cctx, cancel := context.WithTimeout(ctx, t.cfg.ConnectTimeout)
	defer cancel()
	go func() {
		select {
		case <-t.failed:
			cancel()
		case <-cctx.Done():
		}
	}()
	var (
		pc  *pice.Conn
		err error
	)
	if controlling {
		pc, err = t.ag().Dial(cctx, remote.Ufrag, remote.Pwd)
	} else {
		pc, err = t.ag().Accept(cctx, remote.Ufrag, remote.Pwd)
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ice: connect: %w", ctx.Err())
		case cctx.Err() != nil:
			select {
			case <-t.failed:
				return nil, t.noPathError(": connectivity checks failed")
			default:
			}
			return nil, t.noPathError(fmt.Sprintf(" within %v", t.cfg.ConnectTimeout))
		}
		return nil, fmt.Errorf("ice: connect: %w", err)
	}
	if pair, err := t.ag().GetSelectedCandidatePair(); err == nil && pair != nil {
		if perr := t.pathAllowed(pair.Local, pair.Remote); perr != nil {
			t.refusePath(perr)
			return nil, fmt.Errorf("ice: connect: %w", perr)
		}
	}
	return pc, nil
}

// noteConnectivity reports to OnConnectivity when a connected path stops
// or starts answering again, and to OnFailed when it has failed for good.
// The first connection is Connect's to report. It runs as a report is
// delivered (deliver).
func (t *Transport) noteConnectivity(s pice.ConnectionState) {
	var up bool
	switch s {
	case pice.ConnectionStateConnected, pice.ConnectionStateCompleted:
		up = true
	case pice.ConnectionStateDisconnected:
	case pice.ConnectionStateFailed:
		if !t.everUp || t.failReported {
			return // a Connect that never succeeded reports its own failure
		}
		// pion reports Failed after the Disconnected it already told of:
		// that is not one more "down" but the end of the path.
		t.deliverFailed(fmt.Errorf("%w: nothing answered for %v", ErrNoPath, t.cfg.DisconnectedTimeout+t.cfg.FailedTimeout))
		return
	default:
		return // new, checking, closed: nothing to report
	}
	switch {
	case !t.everUp:
		t.everUp, t.wasUp = up, up
	case up != t.wasUp:
		t.wasUp = up
		if t.cfg.OnConnectivity != nil {
			t.cfg.OnConnectivity(up)
		}
	}
}

// agentState takes a connection state that pion's agent ag reports, on
// its notifier goroutine. After a Restart, pion may still deliver states
// of the old generation: on the same agent (a Transport with its own
// sockets) they come before the Checking that pion's Restart reports
// when the agent was past Checking, so the gate drops them until that
// Checking (awaitMarker). Until the restart's new pair is selected there
// is no path to lose: Disconnected and Failed are dropped (the restart
// timer fails a restart that finds no path), and Connected counts only
// with a pair selected.
func (t *Transport) agentState(ag *pice.Agent, s pice.ConnectionState) {
	t.cfg.Logger.Debug("ice: connection state", "state", s.String())
	t.gateMu.Lock()
	stale := false
	switch {
	case t.awaitMarker:
		t.awaitMarker = s != pice.ConnectionStateChecking
		stale = true
	case t.restarting:
		switch s {
		case pice.ConnectionStateConnected, pice.ConnectionStateCompleted:
			pair, err := ag.GetSelectedCandidatePair()
			stale = err != nil || pair == nil
			if !stale {
				t.endRestartLocked()
			}
		case pice.ConnectionStateDisconnected, pice.ConnectionStateFailed:
			stale = true
		}
	}
	t.lastState = s
	gen := t.gen.Load()
	t.gateMu.Unlock()
	if stale {
		t.cfg.Logger.Debug("ice: a connection state from before the last restart, ignored", "state", s.String())
		return
	}
	t.report(gen, s)
}

// consentState takes a connection state that the consent session of
// generation gen reports, on the Endpoint's consent goroutine.
func (t *Transport) consentState(gen uint64, s pice.ConnectionState) {
	if gen != t.gen.Load() {
		return // a session that a Restart retired as it reported
	}
	t.report(gen, s)
}

func (t *Transport) report(gen uint64, s pice.ConnectionState) {
	if s == pice.ConnectionStateFailed {
		t.failedOnce.Do(func() { close(t.failed) })
	}
	t.reports.add(report{gen: gen, kind: reportState, state: s})
}

// deliver tells the application what r reports, unless r belongs to a
// generation before the last Restart or the Transport has failed.
func (t *Transport) deliver(r report) {
	if r.gen != t.gen.Load() || t.failReported {
		return
	}
	if !t.everUp && t.connectOK.Load() {
		// pion's report of the first connection may come after Connect
		// returned, and after a Restart that drops it as stale.
		t.everUp, t.wasUp = true, true
	}
	switch r.kind {
	case reportState:
		t.noteConnectivity(r.state)
	case reportPath:
		if t.cfg.OnPathChange != nil {
			p := r.path
			p.RTT = t.rtt.rtt()
			t.cfg.OnPathChange(p)
		}
	case reportDown:
		t.deliverDown()
	case reportFailed:
		t.deliverFailed(r.err)
	}
}

// deliverDown tells OnConnectivity that a path that answered stopped.
func (t *Transport) deliverDown() {
	if t.wasUp {
		t.wasUp = false
		if t.cfg.OnConnectivity != nil {
			t.cfg.OnConnectivity(false)
		}
	}
}

// deliverFailed ends the Transport's reports: a path that was up goes
// down first, then OnFailed gets err; nothing is delivered after it.
func (t *Transport) deliverFailed(err error) {
	t.failReported = true
	t.deliverDown()
	if t.cfg.OnFailed != nil {
		t.cfg.OnFailed(err)
	}
}

// onSelected runs on pion's notifier goroutine, one call at a time.
func (t *Transport) onSelected(local, remote pice.Candidate) {
	// The generation first: a pair that is still selected after it was
	// read belongs to it (Restart adds one once pion dropped the pair).
	gen := t.gen.Load()
	if !t.selectedNow(local, remote) {
		return
	}
	if err := t.pathAllowed(local, remote); err != nil {
		t.refusePath(err)
		return
	}
	if t.ep != nil {
		if err := t.claimSelected(); err != nil {
			t.cfg.Logger.Warn("ice: the selected path cannot be used on the shared endpoint", "err", err)
			return
		}
	}
	p := t.makePath(local, remote)
	t.mu.Lock()
	if t.gen.Load() != gen {
		t.mu.Unlock()
		return // a Restart dropped the pair meanwhile
	}
	t.path = p
	p = t.withAttestationLocked(p)
	t.mu.Unlock()
	t.cfg.Logger.Debug("ice: selected path", "local", p.Local.Type, "remote", p.Remote.Type, "relay", p.Relay)
	t.pathSelected(gen)
	t.reports.add(report{gen: gen, kind: reportPath, path: p})
}

// selectedNow reports whether local and remote are, as far as a Path
// tells, the pair that pion's agent has selected. pion reports a
// selection on its notifier goroutine, which may run after a Restart has
// dropped the pair (or after a later selection): that report is no path.
func (t *Transport) selectedNow(local, remote pice.Candidate) bool {
	ag := t.ag()
	if ag == nil {
		return false
	}
	pair, err := ag.GetSelectedCandidatePair()
	return err == nil && pair != nil &&
		candidateInfo(pair.Local) == candidateInfo(local) && candidateInfo(pair.Remote) == candidateInfo(remote)
}

// notePath records the selected pair when Connect returns, in case pion's
// notifier has not yet run onSelected, so that Path is current as soon as
// Connect returns.
func (t *Transport) notePath() {
	ag := t.ag()
	if ag == nil {
		return
	}
	pair, err := ag.GetSelectedCandidatePair()
	if err != nil || pair == nil || t.pathAllowed(pair.Local, pair.Remote) != nil {
		return
	}
	p := t.makePath(pair.Local, pair.Remote)
	t.mu.Lock()
	if t.path.Local.Type == "" {
		t.path = p
	}
	t.mu.Unlock()
}

func (t *Transport) makePath(local, remote pice.Candidate) Path {
	p := Path{Local: candidateInfo(local), Remote: candidateInfo(remote)}
	if local.Type() == pice.CandidateTypeRelay {
		p.Relay = t.relayURL(local)
	}
	return p
}

// relayURL returns the URL of the TURN server behind a local relay
// candidate, found by the local port of the socket that talks to it (the
// candidate's related port).
func (t *Transport) relayURL(local pice.Candidate) string {
	protos := []string{"udp", "tcp"}
	if rc, ok := local.(*pice.CandidateRelay); ok && (rc.RelayProtocol() == "tcp" || rc.RelayProtocol() == "tls") {
		protos = []string{"tcp"}
	}
	if ra := local.RelatedAddress(); ra != nil {
		for _, proto := range protos {
			if hp, ok := t.relays.server(proto, ra.Port); ok {
				if u, ok := t.servers[proto+"|"+hp]; ok {
					return u
				}
			}
		}
	}
	// A single TURN server is the one.
	if len(t.servers) == 1 {
		for _, u := range t.servers {
			return u
		}
	}
	return ""
}

func candidateInfo(c pice.Candidate) CandidateInfo {
	info := CandidateInfo{Type: sdp.CandidateType(c.Type().String()), Protocol: "udp"}
	if c.NetworkType().IsTCP() {
		info.Protocol = "tcp"
	}
	switch c.Type() {
	case pice.CandidateTypeServerReflexive:
		info.Type = sdp.CandidateServerReflexive
	case pice.CandidateTypePeerReflexive:
		info.Type = sdp.CandidatePeerReflexive
	}
	if a, err := netip.ParseAddr(c.Address()); err == nil {
		info.Address = netip.AddrPortFrom(a.Unmap(), uint16(c.Port()))
	}
	return info
}

// Path returns a snapshot of the selected path; the zero Path before one
// is selected and after a Restart until a new one is.
func (t *Transport) Path() Path {
	t.mu.Lock()
	p := t.withAttestationLocked(t.path)
	lite := t.remote.Lite
	t.mu.Unlock()
	if p.Local.Type != "" {
		p.RTT = t.rtt.rtt()
		p.RemoteLite = lite
	}
	return p
}

// Restart begins an ICE restart (RFC 8445 section 2.4): it makes new local
// credentials and drops the current candidates and path. The caller then
// gathers again with Gather, sends the new credentials and candidates to
// the peer, and gives the peer's new ones to SetRemote and
// AddRemoteCandidate. The net.Conn from Connect stays usable: packets
// written before a new path is selected are dropped, as on a network
// without a route. A connected Transport reports the path down
// (Config.OnConnectivity(false), on another goroutine) and arms a timer:
// if no new pair is selected within DisconnectedTimeout plus
// FailedTimeout, Config.OnFailed gets a *RestartTimeoutError. After a
// Gather that returned before gathering ended (its ctx ended), Restart
// first waits for that gathering to end, on ICE component 1 and on the
// RTCP component if it runs, or for ctx, which then fails it with nothing
// changed.
func (t *Transport) Restart(ctx context.Context) (Credentials, error) {
	if err := ctx.Err(); err != nil {
		return Credentials{}, fmt.Errorf("ice: restart: %w", err)
	}
	creds, err := newCredentials()
	if err != nil {
		return Credentials{}, err
	}
	if err := t.awaitGathered(ctx); err != nil {
		return Credentials{}, err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return Credentials{}, fmt.Errorf("ice: restart: %w", net.ErrClosed)
	}
	parked, cs := t.parked, t.consent
	t.mu.Unlock()
	t.red.add(creds.Pwd)
	gen := t.beginRestart(parked)
	if parked {
		// pion's agent is closed: the restart gets a new one, whose checks
		// SetRemote starts. The old session reports nothing more; Restart
		// may run inside one of its reports, so it does not wait for it.
		t.ep.e.retireConsent(cs)
		acfg := *t.acfg
		acfg.LocalUfrag, acfg.LocalPwd = creds.Ufrag, creds.Pwd
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return Credentials{}, fmt.Errorf("ice: restart: %w", net.ErrClosed)
		}
		t.parked, t.consent, t.redial = false, nil, true
		t.gatherEnd = nil // the closed agent's, which reports no end
		err := t.newAgent(&acfg)
		t.mu.Unlock()
		if err != nil {
			t.abortRestart()
			return Credentials{}, fmt.Errorf("ice: restart: %w", err)
		}
	} else if err := t.ag().Restart(creds.Ufrag, creds.Pwd); err != nil {
		t.abortRestart()
		return Credentials{}, fmt.Errorf("ice: restart: %w", err)
	}
	if err := t.comp.restart(creds); err != nil {
		return Credentials{}, err
	}
	t.limit.reset()
	t.mu.Lock()
	t.local = creds
	t.path = Path{}
	t.peerLocal = nil
	// pion's agent has dropped the old pair: from now on its reports,
	// and those of the old consent session, are of the old generation.
	t.gen.Store(gen)
	connected := t.conn != nil
	t.mu.Unlock()
	if t.ep != nil {
		// Before Gather, where pion's agent takes the new ufrag's
		// connection (GetConn).
		t.ep.setLocal(creds)
		t.ep.e.release(t.ep)
	}
	if connected {
		t.armRestartTimer(gen)
	}
	// On a goroutine of the queue's: the caller may hold locks that
	// OnConnectivity takes.
	t.reports.addAsync(report{gen: gen, kind: reportDown})
	return creds, nil
}

// awaitGathered waits until no gathering that a Gather cut short by its
// ctx left running remains, on this agent or on the RTCP component's,
// whose agent restarts with it: pion's Restart does not stop a gathering
// that has not yet marked itself started, and one that ends after the
// restart leaves the agent refusing to gather again. It looks again after
// each end, so that a park meanwhile (which closes the agent, and the
// wait with it) is seen; ctx or Close end the wait with an error.
func (t *Transport) awaitGathered(ctx context.Context) error {
	for range 4 { // two agents; a park ends a wait at most once more
		end := t.pendingGather()
		if end == nil {
			if s := t.comp.get(); s != nil {
				end = s.pendingGather()
			}
		}
		if end == nil {
			return nil
		}
		select {
		case <-end:
		case <-ctx.Done():
			return fmt.Errorf("ice: restart: waiting for the last gathering to end: %w", ctx.Err())
		case <-t.closing:
			return fmt.Errorf("ice: restart: %w", net.ErrClosed)
		}
	}
	return nil
}

// pendingGather returns the channel closed at the end of a gathering
// still running, or nil.
func (t *Transport) pendingGather() chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.parked {
		return nil
	}
	return t.gatherEnd
}

// SetRemote sets the peer's credentials after an ICE restart.
func (t *Transport) SetRemote(remote Peer) error {
	if remote.Ufrag == "" || remote.Pwd == "" {
		return errors.New("ice: set remote: the peer's ufrag and pwd are required")
	}
	t.red.add(remote.Pwd)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("ice: set remote: %w", net.ErrClosed)
	}
	t.remote = remote
	redial := t.redial
	t.redial = false
	if redial {
		t.bg.Add(1)
	}
	gen := t.gen.Load()
	t.mu.Unlock()
	t.gateMu.Lock()
	if t.restarting && t.restartGen == gen {
		t.answered = true
	}
	t.gateMu.Unlock()
	if t.ep != nil {
		t.ep.setPeer(remote)
	}
	if redial {
		go t.reconnect(gen, remote)
		return nil
	}
	ag := t.ag()
	if ag == nil {
		return nil // parked, no restart: the consent session keeps its peer
	}
	if err := ag.SetRemoteCredentials(remote.Ufrag, remote.Pwd); err != nil {
		return fmt.Errorf("ice: set remote: %w", err)
	}
	return t.comp.setRemote(remote)
}

// reconnect runs the checks of a restart after park on the new agent and
// parks the Transport again once a pair is selected. A path that is not
// found within ConnectTimeout is reported to OnFailed, unless another
// Restart followed the one of generation gen.
func (t *Transport) reconnect(gen uint64, remote Peer) {
	defer t.bg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.ConnectTimeout)
	defer cancel()
	ag := t.ag()
	var err error
	if t.controlling {
		_, err = ag.Dial(ctx, remote.Ufrag, remote.Pwd)
	} else {
		_, err = ag.Accept(ctx, remote.Ufrag, remote.Pwd)
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return
	}
	if err != nil {
		t.failRestart(gen, t.noPathError(" after an ICE restart"))
		return
	}
	if err := t.claimSelected(); err != nil {
		t.cfg.Logger.Warn("ice: the restarted path cannot be used on the shared endpoint", "err", err)
		return
	}
	t.notePath()
	t.pathSelected(gen)
	if err := t.park(t.controlling); err != nil && !errors.Is(err, net.ErrClosed) {
		t.cfg.Logger.Debug("ice: park after restart", "err", err)
	}
}

// Close stops the agent, closes its sockets and the net.Conn from
// Connect, and waits for the Transport's goroutines to finish. A second
// call returns an error wrapping net.ErrClosed.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("ice: close: %w", net.ErrClosed)
	}
	t.closed = true
	c := t.conn
	parked, cs := t.parked, t.consent
	t.mu.Unlock()
	close(t.closing)
	t.cancel()
	t.gateMu.Lock()
	t.endRestartLocked()
	t.gateMu.Unlock()
	// No report runs after this (nor after Close returns).
	t.reports.close()
	var err error
	if parked {
		t.ep.e.stopConsent(cs)
	} else {
		err = t.ag().GracefulClose()
	}
	t.bg.Wait()
	t.closeTCP()
	if t.ep != nil {
		t.ep.e.detach(t.ep)
	}
	if c != nil {
		c.wait()
	}
	err = errors.Join(err, t.comp.close())
	if err != nil {
		return fmt.Errorf("ice: close: %w", err)
	}
	return nil
}
