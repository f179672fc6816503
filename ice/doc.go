// Package ice finds the shortest working media path between two
// endpoints with ICE (RFC 8445): host candidates first, server-reflexive
// (STUN) next, a TURN relay only when nothing direct works. It wraps
// pion/ice/v3 and exposes none of its types.
//
// A [Transport] gathers local candidates ([Transport.Gather], with
// trickle), takes the peer's credentials and candidates from its SDP
// ([Transport.AddRemoteCandidate]), runs the checks and returns the
// selected path as a net.Conn ([Transport.Connect]). [Transport.Path]
// reports the selected pair, and [Config.OnPathChange] each change.
// [Transport.Restart] performs an ICE restart without tearing the
// connection down.
//
// # SIP gear
//
// Peers without ICE (RFC 3264 alone) are reached with a [Direct] transport
// ([ListenDirect]): one UDP socket for RTP and one for RTCP on the next
// port, media sent to the signalled address and moved to the address the
// peer really sends from only when the media session reports that a packet
// from it authenticated (the media package's SourceLatcher), so a third
// party cannot take the stream by sending first. [Path] then has NoICE set
// and Latched once it moved. [RelayOnly] refuses peers without ICE; under
// [DirectOnly] a Direct refuses, and never latches onto, an address outside
// [Config.SiteNetworks], with an error that wraps [ErrNoICEPolicy],
// [ErrPolicy] and a *[PolicyError].
//
// For a peer that does not multiplex RTCP, [Transport.EnableRTCPComponent]
// runs ICE component 2: a second pion agent with the same credentials and
// its own sockets, whose candidates are reported as component 2 and whose
// path carries RTCP (the net.Conn from Connect sends RTCP there and reads
// from both). rtcp-mux stays the default.
//
// A Lite Transport answers a check that carries ICE-CONTROLLED, from a full
// agent that wrongly stays controlled against it, with a 487 Role Conflict
// error response (RFC 8445 section 7.3.1.1) signed with its password, so
// that the full agent switches to controlling; pion/ice/v3 would drop the
// check silently and the call would never connect (rtpengine and Janus stay
// controlled when a Lite agent offers). The check is authenticated before
// it is answered, by a parser of this package that reads only USERNAME,
// ICE-CONTROLLED, ICE-CONTROLLING and MESSAGE-INTEGRITY; nothing pion's
// STUN parser would see is changed. [Transport.RoleConflicts] counts the
// answers and [Path].RemoteLite says whether the peer is Lite. A full
// agent that pion runs controlled against a peer that also stays
// controlled is not helped: pion can switch neither role nor expose its
// tie-breaker.
//
// # Policies
//
// [PreferDirect] (the default) uses every candidate type and nominates a
// relay pair only when no direct pair has succeeded within
// [Config.RelayWait]; when both succeed the direct pair wins. [DirectOnly]
// keeps media on the site's own networks (see below). [RelayOnly] gathers only relay candidates,
// never contacts STUN-only servers, and sends relay candidates with their
// related address hidden, so nothing it sends reveals a host or
// server-reflexive address. Under every policy the related address of
// reflexive and relay candidates is sent as 0.0.0.0 port 0.
//
// # What DirectOnly proves
//
// A candidate's type is what its sender says it is: a peer behind a TURN
// relay reaches us from the relay's address, which pion learns as
// peer-reflexive from the peer's checks, and a relay candidate can be sent
// as "typ host". So DirectOnly judges addresses, not labels:
//
//   - this side never gathers a relay candidate, never contacts a TURN
//     server, and refuses the peer's relay candidates, so it never pairs
//     or nominates a relay of its own or one the peer discloses;
//   - the remote address of every pair lies inside [Config.SiteNetworks]
//     ([DefaultSiteNetworks]: loopback, RFC 1918, IPv4 link-local, IPv6
//     ULA and link-local). A signalled candidate outside them is refused
//     by [Transport.AddRemoteCandidate] whatever its type; every socket
//     the Transport reads (UDP, the shared [UDPMux], ICE-TCP) drops
//     connectivity checks and media from outside them before pion sees
//     them, so no peer-reflexive candidate is learnt there; and the pair
//     pion selects is checked once more. When nothing qualifies, Connect
//     fails with an error wrapping both [ErrNoPath] and a [*PolicyError]
//     ([ErrPolicy]) naming the last address refused;
//   - in kms and hybrid keying a securecall peer attests, inside SRTCP,
//     the type and address of its own local candidate on the selected
//     path ([Transport.NotePeerAttestation], [Path.PeerAttested],
//     [Path.PeerLocal], [Path.AttestationMatches]). One that attests a
//     relay, or an address outside the site networks, is refused: the
//     net.Conn from Connect then fails with the [*PolicyError]. This
//     catches a relay inside the site (a TURN server on a site address
//     that relays for a peer outside it), which no address filter can.
//
// What it cannot know:
//
//   - a peer that attests nothing: browsers, SIP phones and every peer in
//     dtls keying (whose SRTCP keys are only as trustworthy as the
//     signaling) are reported unattested, and only their address is
//     judged. A relay inside the site that such a peer uses is invisible;
//   - a peer that lies: an attestation proves only that a holder of the
//     call key sent it (the peer, or anyone the KMS gave the key), not
//     that it is true. A peer that forwards media elsewhere, or sits behind
//     a relay it does not disclose, is not caught by its own word;
//   - what lies between on-site addresses: a NAT, a media relay or a
//     router inside the site that forwards off the site is not visible
//     in addresses (AttestationMatches is false through a NAT or an
//     undisclosed relay, which the application may treat as it likes);
//   - spoofed addresses: the site guard trusts the source address of a
//     datagram. An attacker on the media path can forge a site source
//     address, but still needs the ICE password to pass a check and the
//     SRTP keys to deliver media; an attestation it cannot forge;
//   - media after a path change: a securecall.Call under DirectOnly waits
//     (up to 2 s) for the peer's attestation before it reports the call
//     connected, so no media crosses a relay the peer attests at set-up;
//     after a later path change the new attestation is taken as media is
//     read, so packets on the new path may cross an on-site relay before
//     the refusal. The address checks act before any media; the
//     attestation detects and stops.
//
// To keep DirectOnly's rule against relays without limiting addresses,
// set SiteNetworks to 0.0.0.0/0 and ::/0.
//
// # Defaults and why
//
// pion's defaults suit a browser that may wait: relay pairs wait 2 s and
// peer-reflexive ones 1 s before nomination, checks are paced every 200 ms.
// Here a direct call must connect at once and a blocked one must fall back
// promptly:
//
//   - checks are paced every 50 ms while connecting (RFC 8445's Ta);
//   - host pairs are nominated as soon as they succeed, server-reflexive
//     pairs after 20 ms (host pairs on a shared network succeed in the same
//     round);
//   - [DefaultRelayWait] is 200 ms. In the NAT matrix (real Linux NAT in
//     network namespaces, TestNATMatrix) a direct call between two cone
//     NATs connects in 50-105 ms (one or two check rounds), with or
//     without TURN configured, so
//     the direct pair is nominated long before relays may be; a call with
//     a symmetric NAT connects through coturn in 208-237 ms. On loopback
//     (BenchmarkConnect) a direct Connect takes about 0.34 ms and a relayed
//     one about 203 ms;
//   - [DefaultPeerReflexiveWait] is 50 ms. Through NAT the peer's checks
//     arrive from its mapped address, which pion learns as peer-reflexive,
//     so this wait is on the path of every direct call through NAT (with
//     pion's 1 s the cone-to-cone call above takes over a second);
//   - a pair is given up after 15 unanswered checks (750 ms), and a STUN
//     server gets 2 s to answer during gathering;
//   - keepalive, disconnected and failed timeouts keep pion's values
//     ([DefaultKeepaliveInterval], [DefaultDisconnectedTimeout],
//     [DefaultFailedTimeout]); [DefaultConnectTimeout] bounds Connect. A
//     connected path silent for DisconnectedTimeout is reported down
//     (Config.OnConnectivity); silent for FailedTimeout more (30 s in all
//     by default) it has failed for good (Config.OnFailed, with an error
//     wrapping [ErrNoPath]). A Restart reports the path down at once and
//     arms one timer of as long (30 s): a restart that selects no pair
//     by then (the peer never answered, the application rolled it back,
//     or no pair works) fails with a [RestartTimeoutError]; the timer is
//     stopped when the new pair is selected, another Restart begins or
//     Close runs, so an idle call owns none.
//
// pion names the local end of a pair by its base, so a direct path through
// NAT is reported as host (or srflx) to srflx or prflx; [Path.Direct] says
// whether a relay is involved.
//
// mDNS is disabled: candidates carry IP addresses, and peers' ".local"
// candidates are refused. Loopback addresses are gathered only when
// [Config.IPFilter] accepts them.
//
// # Security
//
// ICE passwords and TURN credentials never appear in logs or errors:
// [Credentials], [Peer] and [Server] print redacted, and every message pion
// logs passes through a filter that removes the known secrets (pion logs
// the remote password when checks start).
//
// turns: servers are verified with [Config.TLSConfig] (or the system
// roots); there is no option to skip verification.
//
// # Remote datagrams: the guard
//
// pion's STUN and TURN parsers are not ours, and pion/stun/v2 v2.0.0 has a
// parser that panics: XORMappedAddress.GetFromAs reads the address family
// before it checks the attribute's length (GO-2026-6163 in stun/v3), and
// Message.Decode reads the legacy type 0x8020 as XOR-MAPPED-ADDRESS. So
// every socket pion reads is wrapped: host and server-reflexive sockets,
// the TURN client's UDP socket and its TCP and TLS streams (re-framed as
// pion's STUNConn frames them), the shared [UDPMux] socket, and the
// ICE-TCP listener's connections (RFC 4571 frames). Socket kinds the guard
// would not read (pion's own TCP and DTLS dials) are refused. One socket
// is not wrapped: when [Config.Networks] has TCP4 or TCP6 and the peer
// offers a passive ICE-TCP candidate, pion dials it with its own dialer
// (active ICE-TCP), and what that connection returns reaches pion's agent
// unguarded. The agent decodes only USERNAME, PRIORITY, ICE-CONTROLLED,
// ICE-CONTROLLING, USE-CANDIDATE and MESSAGE-INTEGRITY there, none of
// which reads past its value in this pion version, and
// FuzzTransportDatagram drives that path too. On each datagram the guard:
//
//   - decides what is STUN with pion's own test (the magic cookie), so
//     nothing pion parses as STUN escapes it;
//   - decodes it with pion's own Message.Decode and judges each attribute
//     by the type pion decoded (so 0x8020 is judged as XOR-MAPPED-ADDRESS):
//     every attribute pion/stun, pion/ice or pion/turn decode must have
//     the size pion's encoder writes for it (addresses 8 or 20 bytes with
//     the matching family, PRIORITY 4, ICE-CONTROLLED/-CONTROLLING 8,
//     MESSAGE-INTEGRITY 20, FINGERPRINT 4, ERROR-CODE a valid class,
//     LIFETIME 4, text within RFC 5389's limits, ...), and pion's decoder
//     for it must return on a buffer that ends with the value, the layout
//     in which the v2 parser panics;
//   - drops a datagram with bytes after the message or with more than 32
//     attributes, and STUN responses that answer no request sent from that
//     socket (an off-path host cannot plant a server-reflexive address);
//   - on a TURN client's socket, checks the payload of Data indications and
//     ChannelData as a datagram too, since the TURN client hands it to the
//     agent.
//
// A test reads the pinned pion sources and fails when they decode an
// attribute the guard does not know. Dropped datagrams are counted in
// [Stats.STUNDropped]. What an attacker who can reach a socket can still
// do: make the guard and pion spend a few microseconds per datagram, and
// send STUN that pion rejects (bad MESSAGE-INTEGRITY) or media from an
// unknown address, which pion drops; none of it changes the call.
//
// # The peer's candidates
//
// pion pairs every remote candidate with every local candidate of its
// network type and checks every pair, so a description with a thousand
// candidates would aim a thousand addresses' worth of checks at third
// parties. A Transport takes at most [Config.MaxRemoteCandidates]
// ([DefaultMaxRemoteCandidates], 50) of the peer's candidates between
// restarts, whether from the description or trickled, and only while the
// check list stays within [Config.MaxCandidatePairs]
// ([DefaultMaxCandidatePairs], 100, as RFC 8445 section 6.1.2.5 suggests);
// the rest are dropped without an error, counted in
// [Stats.CandidatesDropped] and logged at Debug. Each pair gets at most 15
// checks, so one description makes at most 1,500 checks to at most 50
// addresses. Peer-reflexive candidates are learnt only from checks that
// carry the ICE password.
//
// # Logging of remote input
//
// Nothing a remote party can trigger without the ICE password logs above
// Debug from this package; pion's own warnings about such packets (a check
// with a bad password, a datagram from an unknown address) are
// rate-limited to 10 records a minute per Transport, then summarised
// (internal/pionlog).
//
// # Concurrency
//
// A Transport's methods may be called from any goroutine. Gather calls its
// function on the calling goroutine. [Config.OnPathChange],
// [Config.OnConnectivity] and [Config.OnFailed] pass through one ordered
// queue per Transport: they run one at a time, in order, on the goroutine
// that made the first report while none was running (pion's notifier
// goroutines, an Endpoint's consent goroutine, the restart timer's, that
// of a parked Transport's restarted checks) or, for the report Restart
// makes, on a goroutine started for it; never on the
// goroutine of a call into the Transport, and never after Close. Each
// report carries its restart generation: one that pion (or a parked
// Transport's consent) makes for the path before a Restart and that
// arrives after it is dropped, also when it arrives after the restart's
// new pair was selected. The net.Conn from
// Connect allows one reader and concurrent writers. Close waits for every
// goroutine the Transport started.
//
// A connected Transport runs a fixed set of goroutines: pion's agent loop,
// its check timer and one reader per local candidate socket, plus one that
// moves received packets to the net.Conn's buffer (pion's connection has
// no deadlines). BenchmarkGoroutinesPerTransport measures 5 per connected
// host-only transport and 10 with a STUN and TURN server (a srflx socket
// and the TURN client's reader and timers), none of them busy while idle.
// For a process with many calls, [ListenUDPMux] shares one UDP socket
// among the host candidates of many Transports ([Config.UDPMux]); it saves
// a socket per call, not goroutines. [ListenEndpoint] saves more; see
// below.
//
// # Many calls on one socket
//
// An [Endpoint] ([Config.Endpoint]) is one UDP socket for any number of
// Transports, both ends of a call included. Its one reader takes up to 32
// datagrams per recvmmsg (on Linux its own call, which allocates nothing
// per datagram; elsewhere x/net's ReadBatch, which allocates each source
// address) and routes each on the spot: STUN requests by the ICE
// username (the receiver's ufrag before the colon), STUN responses by
// the transaction ID of the request the Transport sent, everything else by
// the 5-tuple of the Transport's selected pair, straight into the queue
// the net.Conn from Connect reads (a channel of at most 64 datagrams per
// call, in pooled records: an idle call holds no buffer). The media
// session reads each record where it lies (the net.Conn lends it) and
// decrypts it in place, so a call waiting for media holds no read buffer
// either. Decryption then stays with the media session's reader, on the
// application's goroutine.
//
// With push delivery (media.Config.OnRTP, securecall's MediaConfig.OnRTP)
// the media session asks the net.Conn to push instead: the Endpoint's
// reader hands each datagram of the call to the session, which decrypts it
// in the reader's buffer and calls OnRTP, with no queue, copy, wake-up or
// goroutine per call. All the Endpoint's SRTP is then decrypted on its one
// reader, so a process that needs more than one core for it opens an
// Endpoint per core. A datagram that arrives for a call while its OnRTP
// runs on another goroutine waits (at most 64) and follows. Media handed
// over in the process to a pushing call (both ends on one Endpoint) goes
// through one hand-over goroutine of the Endpoint, started on first use,
// since the writer may hold locks of its own session that the receiver's
// OnRTP could need.
//
// Writers share sendmmsg calls when they meet: a writer that finds a
// batch being sent adds its datagram to the next one and returns; none
// waits for a timer or another goroutine (a writer that finds 32 queued
// waits for room). The writer sending makes at most 4 sendmmsg calls for
// the others and then leaves the rest to a goroutine of the Endpoint's,
// so that no writer, the Endpoint's reader included (it answers consent
// checks, and an OnRTP may forward), is kept sending for as long as
// others keep writing. [Endpoint.Batch] holds the sends while its
// function runs, up to 32 at a time, so that a gateway that writes a
// frame to each of many calls per tick sends them 32 to a sendmmsg. The
// queue's memory (32 slots of 2 KiB) comes from a pool that all of a
// process's Endpoints share and goes back once sent, and on Linux so do
// the reader's buffers (taken for a recvmmsg, given back before the reader
// waits): an idle Endpoint holds neither, and a process writing to many
// Endpoints in turn reuses the few queues still in its cache. The
// reader never yields between batches: it serves every call on the
// socket, and waiting behind the process's other goroutines once per
// batch let the socket's buffer overflow. A datagram the socket
// refuses is counted ([EndpointStats].SendErrors) and lost, as UDP loses
// it. The 5-tuple is claimed when the agent nominates
// (its nominating request is answered, or it answers the peer's), so
// media that follows the nomination at once is not lost; two calls whose
// selected pairs have the same remote address cannot share an Endpoint
// (ErrTupleInUse). The Endpoint checks MESSAGE-INTEGRITY itself, one
// HMAC-SHA1 each (an HMAC kept per password, so that a check allocates
// nothing), on STUN responses (with the peer's password: a forged
// one must neither end the transaction, which would leave the genuine
// response unrouted, nor claim its source) and on every request (with the
// local password) before it queues one for pion's agent or a parked
// Transport's consent: the agent's queue holds 16, the Endpoint
// remembers the last 4 nominations per ufrag until pion answers them, and
// a flood of forged checks by anyone who saw the ufrag (in the SDP, and
// in clear in every check) must not crowd out the genuine ones. A parked
// Transport's consent relies on that one check and does not repeat it;
// pion checks the rest. Datagrams for no known ufrag, transaction or 5-tuple,
// and the requests and responses that fail, are dropped and counted
// ([EndpointStats].Unrouted); STUN passes the same guard as on a
// Transport's own sockets before pion parses it.
//
// A connected Transport on an Endpoint runs no goroutine of its own. Once
// Connect has a path, the Transport is parked: pion's agent is closed,
// which ends its 4 goroutines (task loop, check ticker, the STUN reader of
// its candidate, the watcher of its gathering context) and frees its
// state, and the Endpoint keeps consent (RFC 7675): its reader answers
// the peer's authenticated binding requests (USERNAME, MESSAGE-INTEGRITY
// with the local password, FINGERPRINT) with XOR-MAPPED-ADDRESS, and its
// one consent goroutine, which wakes every 100 ms for all its Transports
// and steps only those with a check or a silence due (a queue ordered by
// that time, so that a Transport is looked at about once per check, not
// ten times a second), sends each a binding request every
// KeepaliveInterval with +-20% jitter
// (USERNAME, the ICE role with a fresh tie-breaker, PRIORITY of the
// selected local candidate, MESSAGE-INTEGRITY with the peer's password).
// These messages are built and read without pion/stun, in pooled
// buffers, so that a consent round (the check, its answer and the
// response, with the four HMACs) allocates nothing: a gateway's thousands
// of parked calls send and answer hundreds of checks a second. A fuzz test
// (FuzzEndpointSTUN) holds the Endpoint to pion/stun's reading of any
// datagram: it answers exactly the checks that pion takes as the peer's
// (and the guard lets through), its answers are ones pion takes, and a
// session hears consent only from its peer's address.
// Authenticated responses and requests on the selected 5-tuple are the
// peer's consent; media is not (it is not authenticated at this layer).
// Silence for DisconnectedTimeout reports OnConnectivity(false), FailedTimeout
// more OnFailed (and consent stops: the peer's checks go unanswered), an
// answer in between OnConnectivity(true), as pion's agent reports them;
// those callbacks then run on the consent goroutine, so they must not
// block; Close waits for one in progress and none runs after it (Restart
// from inside one does not wait). Restart on a parked Transport makes a
// new pion agent (with the same configuration and the new credentials),
// which runs no checks until SetRemote: the restart timer fails a restart
// that is never answered. SetRemote starts its checks in the background,
// bounded by ConnectTimeout (OnFailed if no path), and the Transport parks
// again once a pair is selected. A parked Transport
// ignores trickled remote candidates (the path is chosen; pion does not
// renominate either) and refuses Gather until Restart. The peer may keep
// checking pairs it had in flight: those are answered too. Transports with
// their own sockets keep pion's agent for the whole call, as before.
package ice
