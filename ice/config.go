package ice

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Policy says which kinds of media path a Transport may use.
type Policy int

const (
	// PreferDirect uses every candidate type: host and server-reflexive
	// pairs are preferred, and a relay pair is nominated only when no direct
	// pair has worked within Config.RelayWait.
	PreferDirect Policy = iota
	// DirectOnly keeps media on the site's networks: it never gathers
	// relay candidates, refuses the peer's relay candidates, and refuses
	// every remote address outside Config.SiteNetworks whatever its
	// candidate type; in kms and hybrid keying a peer that attests a
	// relay is refused too. The package documentation says what it
	// proves and what it cannot know.
	DirectOnly
	// RelayOnly gathers only relay candidates and never reveals a host or
	// server-reflexive address in what it sends: the peer sees only the
	// TURN server's relayed address. It needs at least one turn: or turns:
	// server.
	RelayOnly
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case PreferDirect:
		return "PreferDirect"
	case DirectOnly:
		return "DirectOnly"
	case RelayOnly:
		return "RelayOnly"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Network is a transport and IP family on which candidates are gathered.
type Network int

// The networks a Transport can gather on.
const (
	UDP4 Network = iota + 1
	UDP6
	TCP4
	TCP6
)

// String returns the network's name, such as "udp4".
func (n Network) String() string {
	switch n {
	case UDP4:
		return "udp4"
	case UDP6:
		return "udp6"
	case TCP4:
		return "tcp4"
	case TCP6:
		return "tcp6"
	}
	return fmt.Sprintf("Network(%d)", int(n))
}

// The defaults for the zero fields of Config. Each is chosen for a call
// that must connect quickly on a direct path when one exists, and fall back
// to a relay promptly when none does; doc.go explains the measurements.
const (
	// DefaultRelayWait is how long relay pairs wait for a direct pair
	// before they may be nominated. pion's default is 2 s; the NAT matrix
	// shows direct server-reflexive pairs through real NAT succeeding within
	// a few tens of milliseconds of the first check, so 200 ms leaves a
	// margin for wide-area round trips while keeping relay fallback short.
	DefaultRelayWait = 200 * time.Millisecond
	// DefaultPeerReflexiveWait is how long a pair with a peer-reflexive
	// remote candidate waits before nomination (pion's default is 1 s).
	// Through NAT the peer's checks arrive from its mapped address, which
	// pion learns as peer-reflexive, so this wait is on the critical path
	// of every direct call through NAT; one check interval (50 ms) lets a
	// host pair on a shared network, which succeeds in the same round,
	// win first.
	DefaultPeerReflexiveWait = 50 * time.Millisecond
	// DefaultConnectTimeout bounds Connect when its context has no earlier
	// deadline.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultDisconnectedTimeout is how long the selected path may be
	// silent before the path is reported as disconnected.
	DefaultDisconnectedTimeout = 5 * time.Second
	// DefaultFailedTimeout is how long a disconnected path may stay silent
	// before the Transport gives it up as failed.
	DefaultFailedTimeout = 25 * time.Second
	// DefaultKeepaliveInterval is how often a consent check is sent on the
	// selected path when no packet has been sent or received on it (on
	// its own sockets; on an Endpoint, every interval, within ±20%).
	DefaultKeepaliveInterval = 2 * time.Second
	// DefaultMaxRemoteCandidates is how many of the peer's candidates a
	// Transport takes, from its description and trickled together. A
	// browser or SIP endpoint offers fewer than 20 (host addresses per
	// interface and family, one server-reflexive, a relay per TURN
	// transport); the limit keeps a peer from aiming checks at many third
	// parties.
	DefaultMaxRemoteCandidates = 50
	// DefaultMaxCandidatePairs bounds the check list, the value RFC 8445
	// section 6.1.2.5 suggests.
	DefaultMaxCandidatePairs = 100
)

// checkInterval is the pacing of connectivity checks while connecting
// (RFC 8445 Ta); pion's 200 ms would add up to that much to a relayed
// connect and to every check round of hole punching.
const checkInterval = 50 * time.Millisecond

// srflxWait is how long server-reflexive pairs wait for a host pair before
// nomination. Host pairs on a shared network succeed within the same check
// round as server-reflexive ones, so a short wait suffices.
const srflxWait = 20 * time.Millisecond

// Config configures a Transport. The zero value is valid: a direct-only
// host-candidate transport on UDP4 and UDP6 with the documented defaults.
type Config struct {
	// Servers are the STUN and TURN servers. If empty, only host candidates
	// are gathered.
	Servers []Server
	// Policy says which kinds of path may be used. If zero, PreferDirect.
	Policy Policy
	// RelayWait is how long relay pairs wait for a direct pair before
	// nomination. If zero, defaults to DefaultRelayWait.
	RelayWait time.Duration
	// PeerReflexiveWait is how long pairs with a peer-reflexive remote
	// candidate wait before nomination. If zero, defaults to
	// DefaultPeerReflexiveWait.
	PeerReflexiveWait time.Duration
	// Lite runs the Transport as ICE-Lite (RFC 8445 section 2.5): for a
	// gateway with a known address; it gathers host candidates only, never
	// sends checks and is always controlled. It cannot be combined with
	// RelayOnly. If false, a full agent.
	Lite bool
	// PublicAddresses maps host candidates 1:1 to these addresses, for a
	// gateway behind a static NAT with a known public address. If empty,
	// host candidates carry the interface addresses.
	PublicAddresses []netip.Addr
	// InterfaceFilter, if set, limits gathering to interfaces for which it
	// returns true. If nil, every interface is used.
	InterfaceFilter func(name string) bool
	// IPFilter, if set, limits host candidates to addresses for which it
	// returns true. If nil, every address is used.
	IPFilter func(netip.Addr) bool
	// Networks are the networks to gather on. If empty, defaults to UDP4
	// and UDP6. TCP4 and TCP6 gather passive ICE-TCP host candidates (RFC
	// 6544) on a listener the Transport owns.
	Networks []Network
	// ConnectTimeout bounds Connect. If zero, defaults to
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// DisconnectedTimeout: if zero, defaults to DefaultDisconnectedTimeout.
	DisconnectedTimeout time.Duration
	// FailedTimeout: if zero, defaults to DefaultFailedTimeout.
	FailedTimeout time.Duration
	// KeepaliveInterval: if zero, defaults to DefaultKeepaliveInterval.
	KeepaliveInterval time.Duration
	// UDPMux, if set, is a socket shared with other Transports for the UDP
	// host candidate (see ListenUDPMux); the Transport does not close it.
	// If nil, the Transport opens its own sockets.
	UDPMux *UDPMux
	// Endpoint, if set, is a UDP socket shared with any number of
	// Transports (see ListenEndpoint): the Transport gathers only its host
	// candidate, STUN and media reach it through the Endpoint's one
	// reader, and the net.Conn from Connect reads straight from it.
	// Once connected the Transport is parked: pion's agent is closed and
	// the Endpoint keeps consent (see Endpoint); OnConnectivity and
	// OnFailed then run on the Endpoint's consent goroutine.
	// It cannot be combined with Servers, UDPMux, RelayOnly or TCP
	// networks. The Transport does not close it.
	// If nil, the Transport opens its own sockets (or uses UDPMux).
	Endpoint *Endpoint
	// TLSConfig is used for turns: servers. If nil, the system roots verify
	// the server, with the host of the server's URL as the server name.
	// The Transport uses a clone and never modifies it.
	TLSConfig *tls.Config
	// OnPathChange, if set, is called each time the selected path changes,
	// with the new path. OnPathChange, OnConnectivity and OnFailed are
	// called in the order the Transport made the reports, one at a time
	// (never concurrently with each other), never after Close has
	// returned, and never on the goroutine of a call into the Transport:
	// on pion's notifier goroutines, an Endpoint's consent goroutine, the
	// restart timer's goroutine, the goroutine of a parked Transport's
	// restarted checks, or a goroutine the Transport starts for a report
	// of Restart. They must not call Close (which waits for the
	// one in progress); they may call Restart. A report that belongs to
	// the path before a Restart and comes after it is dropped.
	OnPathChange func(Path)

	// OnConnectivity, if set, is called with false when the connected path
	// stops answering (no consent or response within DisconnectedTimeout)
	// or Restart drops it, and with true when it answers again or, after
	// a Restart, when the restart's new path answers. It is called only
	// for changes after Connect has succeeded; see OnPathChange for where
	// it runs.
	OnConnectivity func(connected bool)
	// OnFailed, if set, is called once when a Transport whose Connect
	// succeeded has lost its path for good: nothing answered for
	// DisconnectedTimeout plus FailedTimeout (30 s with the defaults); or
	// a Restart selected no pair within as long (err is then a
	// *RestartTimeoutError); or, on an Endpoint, a Restart's checks found
	// no path within ConnectTimeout. err wraps ErrNoPath. The Transport
	// then carries nothing more and reports nothing more; only Close is
	// left to do. See OnPathChange for where it runs.
	OnFailed func(err error)
	// MaxRemoteCandidates is how many of the peer's candidates the
	// Transport takes between ICE restarts; the rest are dropped, counted
	// in Stats.CandidatesDropped and logged at Debug. If zero, defaults to
	// DefaultMaxRemoteCandidates.
	MaxRemoteCandidates int
	// MaxCandidatePairs bounds the check list: a remote candidate whose
	// pairs with the local candidates gathered so far would make it longer
	// is dropped like one over MaxRemoteCandidates. If zero, defaults to
	// DefaultMaxCandidatePairs.
	MaxCandidatePairs int
	// Logger receives the Transport's and pion's diagnostics, with every
	// ICE password and TURN credential redacted. Nothing a remote party
	// can trigger without the ICE password logs above Debug, and pion's
	// records above Debug are rate-limited. If nil, nothing is logged.
	Logger *slog.Logger
	// SiteNetworks are the networks the customer calls local: under
	// DirectOnly the remote address of the selected pair must lie in one
	// of them, whatever type the peer gives its candidate. Other policies
	// ignore it. If empty, defaults to DefaultSiteNetworks (loopback,
	// RFC 1918, IPv4 link-local, IPv6 ULA and link-local). To keep
	// DirectOnly's "no relay" rule without limiting addresses, list
	// 0.0.0.0/0 and ::/0.
	SiteNetworks []netip.Prefix
}

// withDefaults returns a copy of c with the zero fields set.
func (c Config) withDefaults() Config {
	if c.RelayWait == 0 {
		c.RelayWait = DefaultRelayWait
	}
	if c.PeerReflexiveWait == 0 {
		c.PeerReflexiveWait = DefaultPeerReflexiveWait
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.DisconnectedTimeout == 0 {
		c.DisconnectedTimeout = DefaultDisconnectedTimeout
	}
	if c.FailedTimeout == 0 {
		c.FailedTimeout = DefaultFailedTimeout
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.MaxRemoteCandidates == 0 {
		c.MaxRemoteCandidates = DefaultMaxRemoteCandidates
	}
	if c.MaxCandidatePairs == 0 {
		c.MaxCandidatePairs = DefaultMaxCandidatePairs
	}
	if len(c.Networks) == 0 {
		c.Networks = []Network{UDP4, UDP6}
	} else {
		c.Networks = append([]Network(nil), c.Networks...)
	}
	c.Servers = append([]Server(nil), c.Servers...)
	c.PublicAddresses = append([]netip.Addr(nil), c.PublicAddresses...)
	if len(c.SiteNetworks) == 0 {
		c.SiteNetworks = defaultSiteNetworks // shared: never modified
	} else {
		c.SiteNetworks = append([]netip.Prefix(nil), c.SiteNetworks...)
	}
	if c.TLSConfig != nil {
		c.TLSConfig = c.TLSConfig.Clone()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
