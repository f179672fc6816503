package ice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/pion/transport/v3"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// ErrEndpointClosed is wrapped by the errors of every Transport, and of
// every net.Conn from Connect, whose Endpoint was closed. It wraps
// net.ErrClosed.
var ErrEndpointClosed = fmt.Errorf("ice: endpoint closed: %w", net.ErrClosed)

// ErrTupleInUse is wrapped by Connect's error when the selected pair's
// remote address already carries another call on the same Endpoint: media
// is demultiplexed by 5-tuple, so two calls cannot share one.
var ErrTupleInUse = errors.New("ice: the selected pair's 5-tuple already carries another call on this endpoint")

// Tuning of the Endpoint; doc.go explains each.
const (
	// endpointBatch is how many datagrams one recvmmsg or sendmmsg moves.
	endpointBatch = 32
	// endpointBufSize is the largest datagram the Endpoint receives;
	// longer ones are dropped as truncated.
	endpointBufSize = 2048
	// endpointMediaQueue bounds the datagrams waiting for one call's
	// reader (in pooled 2 KiB records: an idle call holds none); more are
	// dropped, as by a socket.
	endpointMediaQueue = 64
	// endpointHandOverQueue bounds the datagrams handed over in the process
	// to calls with push delivery that wait for the hand-over goroutine,
	// for all calls of the Endpoint (in pooled records: none when idle),
	// as the socket's receive buffer bounds those from outside; more are
	// dropped.
	endpointHandOverQueue = 1024
	// endpointSTUNQueue bounds the STUN messages waiting for pion's agent
	// (checks arrive every 50 ms per pair while connecting, consent every
	// few seconds after).
	endpointSTUNQueue = 16
	// maxPendingTx bounds the STUN transactions an Endpoint remembers
	// per attached Transport to route responses; older ones are forgotten.
	maxPendingTx = 32
	// endpointSocketBuffer is the receive and send buffer asked of the
	// kernel (it grants at most net.core.rmem_max and wmem_max): at 50,000
	// datagrams a second the default 208 KiB holds about 5 ms of traffic,
	// which a descheduled reader on a busy machine overruns.
	endpointSocketBuffer = 4 << 20
)

// STUN attribute types the Endpoint reads to route a message.
const (
	attrUsername     = 0x0006
	attrUseCandidate = 0x0025
)

// Endpoint is one UDP socket shared by any number of Transports, for a
// process that carries many calls (a gateway, a media server), as a
// QUIC transport serves many connections. Set it in Config.Endpoint.
//
// One goroutine reads the socket in batches (recvmmsg) and routes each
// datagram without a further hand-off: STUN by the ICE username it
// carries (requests) or by the transaction it answers (responses) to the
// Transport's ICE agent, and everything else (DTLS, SRTP, SRTCP) by the
// 5-tuple of the Transport's selected pair, into the queue that the
// net.Conn from Connect reads, that is the media session's. A datagram for
// no known ufrag, transaction or 5-tuple is dropped and counted
// (EndpointStats.Unrouted), as is a STUN request or response whose
// MESSAGE-INTEGRITY fails: the Endpoint checks each itself, a request
// with the local password and a response with the peer's, before it acts
// on it (a response ends its transaction, an answered nomination routes
// the peer's media at once) or queues it for pion's agent, whose queue
// is short, or a parked Transport's consent. A request forged by anyone
// who saw the ufrag (every check carries it in clear) thus never takes
// the place of the peer's genuine check.
//
// A writer that finds no batch being sent sends its datagram at once, on
// its own goroutine; writers that find one in the kernel add their
// datagram to the next batch (sendmmsg, up to 32) and return, so
// concurrent calls share system calls and no datagram waits for a timer
// or another goroutine. A writer that finds 32 queued
// behind the batch in the kernel waits for room (datagrams stay in order
// and memory is bounded). A datagram the socket refuses is lost, as UDP
// loses it, and counted (EndpointStats.SendErrors).
//
// Both ends of a call may use one Endpoint: their 5-tuples are the same,
// so a datagram between two Transports of one Endpoint is handed over in
// the process (to the Transport whose ufrag is the sender's remote ufrag)
// and never reaches the socket.
//
// Once connected, a Transport on an Endpoint is parked: its pion agent is
// closed (with its goroutines, check list and buffers) and the Endpoint
// keeps the path's consent (RFC 7675) itself: the reader answers the
// peer's authenticated binding requests, and one timer goroutine per
// Endpoint sends each parked Transport's check every KeepaliveInterval
// (+-20%) and reports, through Config.OnConnectivity and OnFailed, a path
// whose peer stopped answering for DisconnectedTimeout (and then for
// FailedTimeout more), or came back, as pion's agent would. Only
// authenticated STUN on the selected 5-tuple counts as consent; media
// does not. A Restart makes a new pion agent, runs its checks (started
// by SetRemote) and parks again; a parked Transport ignores late
// trickled candidates and refuses Gather until Restart.
//
// What it saves, per call: the socket (a file descriptor) and its reader
// goroutine, the ice package's pump goroutine and its 1 MiB-bounded
// buffer, pion's packet buffer for media (media never passes through
// pion's agent), every goroutine of pion's agent once connected (4 on a
// connected Transport with its own sockets: task loop, check ticker, a
// STUN reader per candidate, a context watcher), and system calls: one
// recvmmsg for up to 32 datagrams of any calls instead of one recvfrom
// (and an EAGAIN) per datagram. An Endpoint runs two goroutines for all
// its calls: the reader and the consent timer, and a third once media is
// handed over in the process to a call with push delivery.
//
// Limits: a Transport on an Endpoint gathers only the Endpoint's UDP host
// candidate (no server-reflexive or relay candidates, no ICE-TCP), and two
// calls whose selected pairs have the same remote address cannot share an
// Endpoint (the second fails Connect with ErrTupleInUse).
type Endpoint struct {
	conn   *net.UDPConn
	batch  batchConn
	reader batchReader // the reader goroutine's
	addr   netip.AddrPort
	log    *slog.Logger
	done   chan struct{} // closed when the reader has stopped

	mu      sync.Mutex
	closed  bool
	byUfrag map[string]*stunConn             // local ufrag -> pion's connection
	byTuple map[netip.AddrPort]*endpointConn // remote address -> call's media (its use: conn.use)
	byLocal map[string]*endpointUse          // current local ufrag -> call, for in-process delivery
	pending map[[12]byte]pendingTx           // STUN requests sent, by transaction ID
	uses    map[*endpointUse]struct{}
	consent map[string]*consentSession // local ufrag -> parked Transport
	// consentNew are the sessions startConsent added since the consent
	// goroutine last took them into its queue.
	consentNew []*consentSession

	// Hand-over to pushing conns in the process (handOver): started on
	// first use, guarded by mu.
	handOverQ    chan handOverItem
	handOverDone chan struct{}

	stop        chan struct{} // closed by Close: stops consentLoop
	consentDone chan struct{} // closed when consentLoop has stopped

	// Sending: a writer that finds no batch being sent sends the queue
	// itself (flushLocked); writers that find one being sent add to
	// sendQ and return, and the flushing writer sends it next, for up to
	// maxFlushRounds, then a flushRest goroutine.
	sendMu   sync.Mutex
	sendRoom sync.Cond      // writers waiting for room in sendQ (L: &sendMu)
	flushers sync.WaitGroup // flushRest goroutines, joined by Close
	sendQ    *sendBatch     // the queue, from sendBatches; nil when empty
	queued   int            // datagrams in sendQ
	flushing bool           // a writer is sending a batch
	held     int            // Batch calls running: the queue is sent when full
	sendShut bool           // the Endpoint is closing: writes fail
	out      batchConn      // the send side of batch (a seam for tests)

	stats endpointCounters
	// macChecked, if set (tests only, before any traffic), is called for
	// each MESSAGE-INTEGRITY the Endpoint or a parked Transport's consent
	// verifies.
	macChecked func()

	ifsMu sync.Mutex
	ifs   []*transport.Interface // the interface list its Transports share
}

// interfaceList returns the interface list the Endpoint's Transports
// share, read on first use.
func (e *Endpoint) interfaceList() ([]*transport.Interface, error) {
	e.ifsMu.Lock()
	defer e.ifsMu.Unlock()
	if e.ifs == nil {
		ifs, err := interfaces()
		if err != nil {
			return nil, err
		}
		e.ifs = ifs
	}
	return e.ifs, nil
}

// batchConn is what golang.org/x/net's ipv4 and ipv6 PacketConns offer;
// their Message types are one type.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type pendingTx struct {
	to  *stunConn       // pion's connection that sent it, or
	cs  *consentSession // the parked Transport's consent check
	use bool            // a nominating request (USE-CANDIDATE)
}

// sendSlot is one queued datagram: its header fields first, so that a
// short datagram spans as few cache lines as it can.
type sendSlot struct {
	n    int
	ip   [16]byte
	addr net.UDPAddr
	buf  [endpointBufSize]byte
}

// sendBatch is the memory of one send queue: up to endpointBatch
// datagrams and their sendmmsg headers. An Endpoint takes one when a
// datagram is queued and gives it back once it is sent, to a pool that
// all of the process's Endpoints share: a process that writes to many
// Endpoints in turn (a gateway's tick) reuses the few batches still in
// its cache instead of each Endpoint's own memory, cold by the time that
// Endpoint's next tick comes (BenchmarkEndpointSendQueue), and an idle
// Endpoint holds none.
type sendBatch struct {
	slots [endpointBatch]sendSlot
	msgs  [endpointBatch]ipv4.Message
	bufs  [endpointBatch][1][]byte // msgs[i].Buffers
}

var sendBatches = sync.Pool{New: func() any {
	b := new(sendBatch)
	for i := range b.msgs {
		b.msgs[i].Buffers = b.bufs[i][:]
	}
	return b
}}

// put queues b for dst in slot i.
func (q *sendBatch) put(i int, b []byte, dst netip.AddrPort) {
	s := &q.slots[i]
	s.n = copy(s.buf[:], b)
	if a := dst.Addr(); a.Is4() {
		a4 := a.As4()
		copy(s.ip[:4], a4[:])
		s.addr.IP = s.ip[:4]
	} else {
		s.ip = a.As16()
		s.addr.IP = s.ip[:]
	}
	s.addr.Port = int(dst.Port())
	s.addr.Zone = ""
}

type endpointCounters struct {
	received, sent, readBatches, writeBatches atomic.Uint64
	stun, unrouted, malformed, queueDrops     atomic.Uint64
	inProcess, sendErrors                     atomic.Uint64
}

// EndpointStats is a snapshot of an Endpoint's counters.
type EndpointStats struct {
	// Received and Sent count datagrams through the socket.
	Received, Sent uint64
	// ReadBatches and WriteBatches count the recvmmsg and sendmmsg calls
	// (and single writes) that moved them.
	ReadBatches, WriteBatches uint64
	// STUN counts STUN messages routed to an agent, and the consent
	// requests and responses the Endpoint handles itself for parked
	// Transports.
	STUN uint64
	// Unrouted counts datagrams dropped because no Transport on the
	// Endpoint owns their ufrag, transaction or 5-tuple, or because they
	// are STUN requests or responses whose MESSAGE-INTEGRITY fails (under
	// the local password or the peer's): strays, spoofs and late packets
	// of closed calls.
	Unrouted uint64
	// Malformed counts STUN messages the guard dropped and truncated
	// datagrams.
	Malformed uint64
	// QueueDrops counts datagrams dropped because a queue was full: a
	// call's (64, its reader did not keep up), its pending pushes (64),
	// the hand-over queue of media between the Endpoint's own calls
	// (1,024) or an agent's STUN queue.
	QueueDrops uint64
	// InProcess counts datagrams handed from one Transport of the
	// Endpoint to another without the socket.
	InProcess uint64
	// SendErrors counts datagrams the socket refused (an ICMP error
	// queued on it, no route), and those accepted but still queued when
	// the Endpoint closed: each is lost, as UDP loses it. The write does
	// not report it (the datagram may be another writer's).
	SendErrors uint64
	// Transports is the number of Transports attached.
	Transports int
}

// ListenEndpoint opens the shared socket on addr, which must name a
// specific IP address (port 0 picks a free port), and starts its reader.
// logger receives diagnostics; nil is silent.
func ListenEndpoint(addr netip.AddrPort, logger *slog.Logger) (*Endpoint, error) {
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		return nil, fmt.Errorf("ice: endpoint address %v: needs a specific IP address", addr)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("ice: endpoint: %w", err)
	}
	// Best effort: a smaller buffer than asked for still works.
	_ = conn.SetReadBuffer(endpointSocketBuffer)
	_ = conn.SetWriteBuffer(endpointSocketBuffer)
	e := &Endpoint{
		conn:        conn,
		addr:        conn.LocalAddr().(*net.UDPAddr).AddrPort(),
		log:         logger,
		done:        make(chan struct{}),
		byUfrag:     make(map[string]*stunConn),
		byTuple:     make(map[netip.AddrPort]*endpointConn),
		byLocal:     make(map[string]*endpointUse),
		pending:     make(map[[12]byte]pendingTx),
		uses:        make(map[*endpointUse]struct{}),
		consent:     make(map[string]*consentSession),
		stop:        make(chan struct{}),
		consentDone: make(chan struct{}),
	}
	e.sendRoom.L = &e.sendMu
	e.addr = netip.AddrPortFrom(e.addr.Addr().Unmap(), e.addr.Port())
	if e.addr.Addr().Is4() {
		e.batch = ipv4.NewPacketConn(conn)
	} else {
		e.batch = ipv6.NewPacketConn(conn)
	}
	e.out = e.batch
	if e.reader, err = newBatchReader(conn, e.batch, endpointBatch, endpointBufSize); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ice: endpoint: %w", err)
	}
	go e.read()
	go e.consentLoop()
	return e, nil
}

// Addr returns the shared socket's address.
func (e *Endpoint) Addr() netip.AddrPort { return e.addr }

// Stats returns a snapshot of the Endpoint's counters.
func (e *Endpoint) Stats() EndpointStats {
	e.mu.Lock()
	n := len(e.uses)
	e.mu.Unlock()
	return EndpointStats{
		Received: e.stats.received.Load(), Sent: e.stats.sent.Load(),
		ReadBatches: e.stats.readBatches.Load(), WriteBatches: e.stats.writeBatches.Load(),
		STUN: e.stats.stun.Load(), Unrouted: e.stats.unrouted.Load(),
		Malformed: e.stats.malformed.Load(), QueueDrops: e.stats.queueDrops.Load(),
		InProcess: e.stats.inProcess.Load(), SendErrors: e.stats.sendErrors.Load(),
		Transports: n,
	}
}

// Close closes the socket and waits for its reader. Every Transport on the
// Endpoint loses its path: reads and writes on the net.Conns from Connect
// fail with an error wrapping ErrEndpointClosed (and net.ErrClosed); the
// Transports must still be closed. A second call returns an error
// wrapping net.ErrClosed. Close waits for the goroutines that run the
// functions the Endpoint calls, so it must not be called from one of them
// (media's OnRTP for a call on the Endpoint, a parked Transport's
// OnConnectivity or OnFailed): start a goroutine to close from there.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("ice: close endpoint: %w", net.ErrClosed)
	}
	e.closed = true
	handOverDone := e.handOverDone
	uses := make([]*endpointUse, 0, len(e.uses))
	for u := range e.uses {
		uses = append(uses, u)
	}
	stuns := make([]*stunConn, 0, len(e.byUfrag))
	for _, s := range e.byUfrag {
		stuns = append(stuns, s)
	}
	e.mu.Unlock()
	e.sendMu.Lock()
	e.sendShut = true
	if !e.flushing {
		// Held by a Batch still open: accepted, now never sent.
		e.dropQueuedLocked()
	} // else the flushing writer meets the closed socket and counts them
	e.sendRoom.Broadcast()
	e.sendMu.Unlock()
	err := e.conn.Close()
	<-e.done
	e.flushers.Wait()
	close(e.stop)
	<-e.consentDone
	if handOverDone != nil {
		<-handOverDone
	}
	for _, u := range uses {
		u.media.fail(ErrEndpointClosed)
	}
	for _, s := range stuns {
		_ = s.Close()
	}
	if err != nil {
		return fmt.Errorf("ice: close endpoint: %w", err)
	}
	return nil
}

// read is the Endpoint's one reader: recvmmsg into fixed buffers
// (batchReader), then route each datagram on this goroutine, with no
// allocation per datagram (TestEndpointZeroAllocsPerDatagram).
func (e *Endpoint) read() {
	defer close(e.done)
	for {
		n, err := e.reader.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (an ICMP error queued on the socket): go on, but
			// never spin on a socket that keeps failing.
			e.log.Debug("ice: endpoint read", "err", err)
			time.Sleep(time.Millisecond)
			continue
		}
		e.stats.readBatches.Add(1)
		e.stats.received.Add(uint64(n))
		for i := range n {
			b, src, truncated, ok := e.reader.datagram(i)
			if truncated {
				e.stats.malformed.Add(1)
				continue
			}
			if !ok {
				continue
			}
			e.dispatch(b, src, nil)
		}
		// No yield here, even after a full batch: this goroutine serves
		// every call on the socket, and a yield would queue it behind all
		// of the process's runnable goroutines once per batch while the
		// socket's buffer fills (TestEndpointReaderKeepsUpWithBusyScheduler).
		// The scheduler still preempts it after its time slice.
	}
}

// batchReader is the Endpoint reader's batched read: mmsgReader on
// Linux, x/net's ReadBatch elsewhere.
type batchReader interface {
	// read waits for datagrams and reads up to a batch of them.
	read() (int, error)
	// datagram returns the i-th datagram of the last read (valid until
	// the next), its source with any IPv4-mapped address unmapped,
	// whether it was truncated, and false when its source is not an IP
	// address.
	datagram(i int) (b []byte, src netip.AddrPort, truncated, ok bool)
}

// endpointSTUN reports whether the Endpoint routes b as STUN: what pion
// takes for STUN (isSTUN) with a first byte of 0-3 (RFC 7983), so that
// an SRTP packet whose timestamp happens to equal the magic cookie still
// reaches its call.
func endpointSTUN(b []byte) bool { return len(b) >= 20 && b[0] < 4 && isSTUN(b) }

// stunAttr returns the value of the first attribute of type typ.
func stunAttr(b []byte, typ uint16) ([]byte, bool) {
	off, n, ok := stunAttrAt(b, typ)
	if !ok {
		return nil, false
	}
	return b[off+4 : off+4+n], true
}

// stunAttrAt returns the offset and value length of the first attribute
// of type typ, or false when b has none or malformed attributes before it.
func stunAttrAt(b []byte, typ uint16) (off, n int, ok bool) {
	if len(b) < stunHeaderLen {
		return 0, 0, false
	}
	end := min(stunHeaderLen+int(binary.BigEndian.Uint16(b[2:4])), len(b))
	for off := stunHeaderLen; off+4 <= end; {
		at := binary.BigEndian.Uint16(b[off : off+2])
		n := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if off+4+n > end {
			return 0, 0, false
		}
		if at == typ {
			return off, n, true
		}
		off += 4 + (n+3)&^3
	}
	return 0, 0, false
}

// dispatch routes one datagram from src; from is the sending Transport's
// use when the datagram is handed over in the process.
func (e *Endpoint) dispatch(b []byte, src netip.AddrPort, from *endpointUse) {
	if endpointSTUN(b) {
		e.dispatchSTUN(b, src)
		return
	}
	e.mu.Lock()
	var c *endpointConn
	if from != nil {
		if u := e.byLocal[from.remoteUfrag()]; u != nil {
			c = u.media
		}
	} else {
		c = e.byTuple[src]
	}
	e.mu.Unlock()
	if c == nil {
		e.stats.unrouted.Add(1)
		return
	}
	if from != nil {
		// Handed over in the process, by a writer that may hold locks of
		// its own session (WriteRTP's): a push runs the receiver's code,
		// which may write to that session, so it runs on the hand-over
		// goroutine instead, never on the writer's, and never in the
		// writer's buffer.
		if !c.deliverInProcess(b) {
			e.stats.queueDrops.Add(1)
		}
		return
	}
	if !c.deliver(b) {
		e.stats.queueDrops.Add(1)
	}
}

// handOverItem is a datagram for a pushing conn of this Endpoint, from
// another of its Transports; with r nil, a nudge to push what c queued
// before it pushed (deliverInProcess).
type handOverItem struct {
	c *endpointConn
	r *mediaRecord
}

// handOver queues a copy of b for the hand-over goroutine, started on
// first use; it reports false when b was dropped (the queue full, or the
// Endpoint closed).
func (e *Endpoint) handOver(c *endpointConn, b []byte) bool {
	q := e.handOverQueue()
	if q == nil {
		return false
	}
	r := mediaRecords.Get().(*mediaRecord)
	r.n = copy(r.buf[:], b)
	select {
	case q <- handOverItem{c, r}:
		return true
	default:
		mediaRecords.Put(r)
		return false
	}
}

// nudge has the hand-over goroutine push what c queued. Never blocking:
// when the queue is full the nudge is dropped, and c's next datagram,
// which goes after what it queued (pushOne), pushes them.
func (e *Endpoint) nudge(c *endpointConn) {
	if q := e.handOverQueue(); q != nil {
		select {
		case q <- handOverItem{c: c}:
		default:
		}
	}
}

// handOverQueue returns the hand-over goroutine's queue, starting it on
// first use, or nil once the Endpoint is closed.
func (e *Endpoint) handOverQueue() chan handOverItem {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if e.handOverQ == nil {
		e.handOverQ = make(chan handOverItem, endpointHandOverQueue)
		e.handOverDone = make(chan struct{})
		go e.handOverLoop(e.handOverQ)
	}
	return e.handOverQ
}

// handOverLoop pushes the datagrams handed over in the process until the
// Endpoint closes.
func (e *Endpoint) handOverLoop(q chan handOverItem) {
	defer close(e.handOverDone)
	for {
		select {
		case it := <-q:
			if it.r == nil {
				it.c.pushQueued()
				continue
			}
			if !it.c.deliver(it.r.buf[:it.r.n]) {
				e.stats.queueDrops.Add(1)
			}
			mediaRecords.Put(it.r)
		case <-e.stop:
			// Close: what is still queued is dropped, and counted.
			for {
				select {
				case it := <-q:
					if it.r != nil {
						e.stats.queueDrops.Add(1)
						mediaRecords.Put(it.r)
					}
				default:
					return
				}
			}
		}
	}
}

func (e *Endpoint) dispatchSTUN(b []byte, src netip.AddrPort) {
	if !safeDatagram(b, false) {
		e.stats.malformed.Add(1)
		return
	}
	var (
		to         *stunConn
		cs         *consentSession
		claimed    *endpointUse
		nominating bool
		answered   pendingTx
		isAnswer   bool
	)
	typ := binary.BigEndian.Uint16(b[0:2])
	var id [12]byte
	copy(id[:], b[8:20])
	e.mu.Lock()
	switch typ & 0x0110 {
	case 0x0000: // request: USERNAME is "receiver's ufrag:sender's ufrag"
		if un, ok := stunAttr(b, attrUsername); ok {
			local := un
			for i, c := range un {
				if c == ':' {
					local = un[:i]
					break
				}
			}
			to = e.byUfrag[string(local)]
			if to == nil {
				cs = e.consent[string(local)]
			}
			if to != nil && typ == 0x0001 {
				_, nominating = stunAttr(b, attrUseCandidate)
			}
		}
	case 0x0100, 0x0110: // success and error responses: by transaction
		answered, isAnswer = e.pending[id]
	default: // indications: by 5-tuple
		if c := e.byTuple[src]; c != nil {
			to = c.use.currentSTUN()
		}
	}
	e.mu.Unlock()
	// The HMACs below run without e.mu, which every call's routing takes.
	if typ&0x0110 == 0 && (to != nil || cs != nil) {
		// Only the peer, which knows the local password, signs a request:
		// anyone who saw the ufrag (every check carries it in clear) could
		// fill the agent's short queue, or the ring of nominations, before
		// the peer's genuine check. pion and the consent session drop what
		// fails, so nothing they would take is lost.
		// The local password: pion's agent's, or the parked Transport's.
		var mac *stunMAC
		key := ""
		if to != nil {
			mac, key = &to.mac, to.key
		} else {
			mac, key = &cs.localMAC, cs.localPwd
		}
		e.countMAC()
		if !mac.authentic(b, key) {
			e.stats.unrouted.Add(1)
			return
		}
	}
	if nominating {
		e.mu.Lock()
		to.nominatedBy(id, src)
		e.mu.Unlock()
	}
	if isAnswer {
		// Only the response the peer signed answers: a forgery by someone
		// who saw the transaction ID must not consume it (the genuine
		// response would then be unrouted) nor claim its source.
		e.countMAC()
		if !answered.authentic(b) {
			e.stats.unrouted.Add(1)
			return
		}
		e.mu.Lock()
		if p, ok := e.pending[id]; ok && p == answered {
			e.forgetPendingLocked(id, p)
			to, cs = p.to, p.cs
			if p.use && typ == 0x0101 {
				// The peer accepted our nomination: media from src
				// follows at once, before pion reports the pair.
				claimed = p.to.use
			}
		} // else a copy answered it meanwhile
		e.mu.Unlock()
	}
	if cs != nil {
		e.stats.stun.Add(1)
		if typ&0x0110 == 0 {
			cs.onRequest(b, src)
		} else {
			cs.onResponse(b, src)
		}
		return
	}
	if to == nil || to.isClosed() {
		// Also a late answer to a check of a parked Transport's closed agent.
		e.stats.unrouted.Add(1)
		return
	}
	if claimed != nil {
		_ = e.claim(claimed, src)
	}
	e.stats.stun.Add(1)
	if !to.deliver(b, src) {
		e.stats.queueDrops.Add(1)
	}
}

func (e *Endpoint) countMAC() {
	if e.macChecked != nil {
		e.macChecked()
	}
}

// claim makes src the remote address of u's selected pair: non-STUN
// datagrams from src go to u. It fails with ErrTupleInUse when another
// attached Transport holds src.
func (e *Endpoint) claim(u *endpointUse, src netip.AddrPort) error {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.uses[u]; !ok {
		// Detached meanwhile (its Transport closed while the reader was
		// routing a response to it): a route now would outlive the call
		// and refuse the next one from src.
		return fmt.Errorf("ice: %w", net.ErrClosed)
	}
	if src == e.addr {
		// Both ends on this Endpoint: routed by ufrag, in the process.
		e.releaseTupleLocked(u)
		u.setRemoteLocked(src)
		return nil
	}
	if cur := e.byTuple[src]; cur != nil && cur != u.media {
		return fmt.Errorf("%w (%s)", ErrTupleInUse, src)
	}
	if old := u.remote.Load(); old != nil && *old != src {
		e.releaseTupleLocked(u)
	}
	e.byTuple[src] = u.media
	u.setRemoteLocked(src)
	return nil
}

func (e *Endpoint) releaseTupleLocked(u *endpointUse) {
	if old := u.remote.Load(); old != nil && e.byTuple[*old] == u.media {
		delete(e.byTuple, *old)
	}
}

// notePending remembers a STUN request that s sends, to route its response.
func (e *Endpoint) notePending(s *stunConn, b []byte) {
	if !endpointSTUN(b) || binary.BigEndian.Uint16(b[0:2])&0x0110 != 0 {
		return
	}
	var id [12]byte
	copy(id[:], b[8:20])
	_, use := stunAttr(b, attrUseCandidate)
	e.mu.Lock()
	e.addPendingLocked(id, pendingTx{to: s, use: use})
	e.mu.Unlock()
}

// authentic reports whether b, a response to p, carries a
// MESSAGE-INTEGRITY under the peer's password, with which the request was
// signed (RFC 5389 section 10.1.3); the sender's kept HMAC checks it. It
// is false while the password is unknown.
func (p pendingTx) authentic(b []byte) bool {
	switch {
	case p.cs != nil:
		return p.cs.remoteMAC.authentic(b, p.cs.remotePwd)
	case p.to != nil:
		return p.to.peerMAC.authentic(b, p.to.use.peerPwd())
	}
	return false
}

// owner is the Transport's use of the Endpoint that sent the request.
func (p pendingTx) owner() *endpointUse {
	if p.to != nil {
		return p.to.use
	}
	if p.cs != nil {
		return p.cs.use
	}
	return nil
}

// addPendingLocked remembers a request sent: at most maxPendingTx per
// Transport, whose oldest unanswered one is forgotten to make room, so
// that a call whose checks go unanswered (a peer offering many
// candidates and answering none) costs no other call its transactions.
// e.mu is held.
func (e *Endpoint) addPendingLocked(id [12]byte, p pendingTx) {
	u := p.owner()
	if u == nil {
		return
	}
	if old, ok := e.pending[id]; ok {
		e.forgetPendingLocked(id, old)
	}
	if len(u.txs) >= maxPendingTx {
		delete(e.pending, u.txs[0])
		n := copy(u.txs, u.txs[1:])
		u.txs = u.txs[:n]
	}
	u.txs = append(u.txs, id)
	e.pending[id] = p
}

// forgetPendingLocked forgets a request, answered or replaced; e.mu is
// held.
func (e *Endpoint) forgetPendingLocked(id [12]byte, p pendingTx) {
	delete(e.pending, id)
	u := p.owner()
	if u == nil {
		return
	}
	for i, t := range u.txs {
		if t == id {
			n := copy(u.txs[i:], u.txs[i+1:])
			u.txs = u.txs[:i+n]
			return
		}
	}
}

// write sends b to dst from the socket (or queues it behind the batch
// being sent), or hands it over in the process when dst is this Endpoint:
// from is the sender. A datagram the socket refuses is counted; it is
// returned only when sent alone (larger than a send slot), since in a
// batch it may be another writer's.
func (e *Endpoint) write(b []byte, dst netip.AddrPort, from *endpointUse) error {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if dst == e.addr {
		e.stats.inProcess.Add(1)
		e.dispatch(b, e.addr, from)
		return nil
	}
	if len(b) > endpointBufSize {
		// Larger than a send slot: sent alone, at once; the error is this
		// writer's own.
		_, err := e.conn.WriteToUDPAddrPort(b, dst)
		e.stats.writeBatches.Add(1)
		if err != nil {
			e.stats.sendErrors.Add(1)
			return err
		}
		e.stats.sent.Add(1)
		return nil
	}
	e.sendMu.Lock()
	for e.queued >= endpointBatch && !e.sendShut {
		if !e.flushing {
			// Not reached: a queue is sent as it fills.
			e.flushLocked()
			continue
		}
		// A full batch waits while the one before is in the kernel: wait
		// for room rather than send out of order or grow without bound.
		e.sendRoom.Wait()
	}
	if e.sendShut {
		e.sendMu.Unlock()
		return fmt.Errorf("ice: %w", ErrEndpointClosed)
	}
	if e.sendQ == nil {
		e.sendQ = sendBatches.Get().(*sendBatch)
	}
	e.sendQ.put(e.queued, b, dst)
	e.queued++
	if !e.flushing && (e.held == 0 || e.queued >= endpointBatch) {
		e.flushLocked()
	} // else the flushing writer sends it with its next batch, or Batch does
	e.sendMu.Unlock()
	return nil
}

// Batch runs fn with the Endpoint's sends held: the datagrams written
// meanwhile to the conns of its Transports, by any goroutine, are queued
// and leave in sendmmsg calls of 32 as the queue fills or with a batch
// another writer is sending, and the rest when fn returns (or panics). A
// gateway that sends a frame to each of many calls every 20 ms writes the
// calls of one Endpoint in one Batch: one system call for up to 32
// datagrams, where writes that do not meet another writer's batch take
// one each. Datagrams other goroutines write while fn runs may wait for
// it too (for a Batch, whichever returns first sends them), so fn should
// write and do little else. Datagrams to this Endpoint itself (both ends
// of a call on it) go to the receiving call at once, or to the Endpoint's
// hand-over goroutine when that call pushes; one larger than 2 KiB is
// sent alone at once. Once the Endpoint is closed, writes fail as they do
// outside Batch and fn still runs.
func (e *Endpoint) Batch(fn func()) {
	e.sendMu.Lock()
	e.held++
	e.sendMu.Unlock()
	defer func() {
		e.sendMu.Lock()
		e.held--
		if !e.flushing && !e.sendShut && e.queued > 0 {
			e.flushLocked()
		}
		e.sendMu.Unlock()
	}()
	fn()
}

// maxFlushRounds bounds the sendmmsg rounds one writer makes for others:
// the flusher may be the Endpoint's reader (a consent answer, an OnRTP
// that forwards), which must not stay in the kernel's send path for as
// long as other goroutines keep writing.
const maxFlushRounds = 4

// flushLocked sends what is queued, in batches of up to endpointBatch per
// sendmmsg; other writers queue meanwhile and return. After
// maxFlushRounds it leaves what others queued since to a goroutine of its
// own (flushRest), so that no writer is kept sending for others. sendMu
// is held on entry and on return, not while sending.
func (e *Endpoint) flushLocked() {
	e.flushing = true
	for round := 0; e.queued > 0; round++ {
		if round == maxFlushRounds {
			if e.sendShut {
				e.dropQueuedLocked()
				break
			}
			e.flushers.Add(1)
			go e.flushRest() // keeps flushing set
			return
		}
		e.flushRound()
	}
	e.flushing = false
}

// flushRound sends the queue as it is now. sendMu is held on entry and on
// return, not while sending.
func (e *Endpoint) flushRound() {
	q, n := e.sendQ, e.queued
	e.sendQ, e.queued = nil, 0
	e.sendRoom.Broadcast()
	e.sendMu.Unlock()
	e.flush(q, n)
	sendBatches.Put(q)
	e.sendMu.Lock()
}

// flushRest takes over from a writer that made its rounds and sends until
// the queue is empty: only under sustained writes from many goroutines.
func (e *Endpoint) flushRest() {
	defer e.flushers.Done()
	e.sendMu.Lock()
	for e.queued > 0 {
		e.flushRound()
	}
	e.flushing = false
	e.sendRoom.Broadcast()
	e.sendMu.Unlock()
}

// dropQueuedLocked counts the datagrams still queued as lost, once the
// socket is closed, and forgets them. sendMu is held.
func (e *Endpoint) dropQueuedLocked() {
	if e.queued > 0 {
		e.stats.sendErrors.Add(uint64(e.queued))
	}
	if e.sendQ != nil {
		sendBatches.Put(e.sendQ)
		e.sendQ, e.queued = nil, 0
	}
}

// flush sends the first n datagrams of q with as few sendmmsg calls as
// the kernel allows.
func (e *Endpoint) flush(q *sendBatch, n int) {
	for i := range n {
		s := &q.slots[i]
		q.msgs[i].Buffers[0] = s.buf[:s.n]
		q.msgs[i].Addr = &s.addr
	}
	for off := 0; off < n; {
		sent, err := e.out.WriteBatch(q.msgs[off:n], 0)
		e.stats.writeBatches.Add(1)
		if sent > 0 {
			e.stats.sent.Add(uint64(sent))
		}
		if err != nil {
			// The datagram at off+sent failed (an ICMP error, no route, a
			// closed socket): it is lost, as UDP would have lost it.
			e.stats.sendErrors.Add(1)
			e.log.Debug("ice: endpoint send", "err", err)
			sent++
		}
		off += max(sent, 1)
	}
}

// attach makes a Transport's use of the Endpoint.
func (e *Endpoint) attach(n *guardNet, ipFilter func(netip.Addr) bool, site *siteGuard) (*endpointUse, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("ice: %w", ErrEndpointClosed)
	}
	u := &endpointUse{e: e, n: n, ipFilter: ipFilter, site: site}
	u.media = newEndpointConn(u)
	e.uses[u] = struct{}{}
	return u, nil
}

// detach forgets u and its routes; its connections fail with net.ErrClosed.
func (e *Endpoint) detach(u *endpointUse) {
	e.mu.Lock()
	delete(e.uses, u)
	e.releaseTupleLocked(u)
	// Its unanswered requests would keep the closed call reachable (and
	// its memory).
	for _, id := range u.txs {
		delete(e.pending, id)
	}
	u.txs = nil
	u.local.Store(nil)
	u.peer.Store(nil)
	for k, v := range e.byLocal {
		if v == u {
			delete(e.byLocal, k)
		}
	}
	var stuns []*stunConn
	for k, s := range e.byUfrag {
		if s.use == u {
			delete(e.byUfrag, k)
			stuns = append(stuns, s)
		}
	}
	e.mu.Unlock()
	for _, s := range stuns {
		_ = s.Close()
	}
	u.media.fail(net.ErrClosed)
}

// endpointUse is one Transport's use of an Endpoint; it is the UDPMux
// that pion's agent gathers on.
type endpointUse struct {
	e        *Endpoint
	n        *guardNet
	ipFilter func(netip.Addr) bool
	site     *siteGuard
	media    *endpointConn
	remote   atomic.Pointer[netip.AddrPort] // the selected pair's remote address
	local    atomic.Pointer[Credentials]    // the Transport's ufrag and pwd, which signs the peer's checks
	peer     atomic.Pointer[Credentials]    // the peer's ufrag and pwd, which signs its responses
	stun     atomic.Pointer[stunConn]       // pion's connection for the current ufrag
	txs      [][12]byte                     // its requests in e.pending, oldest first, at most maxPendingTx (e.mu)
}

func (u *endpointUse) remoteUfrag() string {
	if p := u.peer.Load(); p != nil {
		return p.Ufrag
	}
	return ""
}

func (u *endpointUse) peerPwd() string {
	if p := u.peer.Load(); p != nil {
		return p.Pwd
	}
	return ""
}

// setPeer tells the Endpoint the peer's credentials, before pion's agent
// sends checks signed with them: the Endpoint authenticates the responses.
func (u *endpointUse) setPeer(p Peer) { u.peer.Store(&Credentials{Ufrag: p.Ufrag, Pwd: p.Pwd}) }

// setLocal tells the Endpoint the Transport's local credentials, before
// pion's agent gathers with them (GetConn): the Endpoint authenticates the
// peer's nominations to that ufrag with its password.
func (u *endpointUse) setLocal(c Credentials) { u.local.Store(&c) }

func (u *endpointUse) currentSTUN() *stunConn { return u.stun.Load() }

// setRemoteLocked sets the selected pair's remote address, the zero
// AddrPort for none; e.mu is held. The conn keeps its own copy, under the
// lock its Write takes anyway, so that a write at a gateway, where the
// call is cold, loads no line of the use and no address behind a pointer.
func (u *endpointUse) setRemoteLocked(a netip.AddrPort) {
	c := u.media
	c.mu.Lock()
	c.dst = a
	c.mu.Unlock()
	if !a.IsValid() {
		u.remote.Store(nil)
		return
	}
	u.remote.Store(&a)
}

// Close is pion's UDPMux.Close: the Endpoint stays open.
func (u *endpointUse) Close() error { return nil }

// GetConn returns the connection on which pion's agent reads and writes
// STUN for ufrag.
func (u *endpointUse) GetConn(ufrag string, _ net.Addr) (net.PacketConn, error) {
	e := u.e
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("ice: %w", ErrEndpointClosed)
	}
	if s, ok := e.byUfrag[ufrag]; ok && s.use != u {
		e.mu.Unlock()
		return nil, errors.New("ice: endpoint: ufrag in use by another transport")
	}
	var key string // unknown: no nomination to ufrag is authentic
	if c := u.local.Load(); c != nil && c.Ufrag == ufrag {
		key = c.Pwd
	}
	s := newSTUNConn(u, ufrag, key)
	old := e.byUfrag[ufrag]
	e.byUfrag[ufrag] = s
	for k, v := range e.byLocal {
		if v == u {
			delete(e.byLocal, k)
		}
	}
	e.byLocal[ufrag] = u
	u.stun.Store(s)
	e.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	var pc net.PacketConn = &guardPacketConn{PacketConn: s, n: u.n, txids: &txidSet{}}
	if u.site != nil {
		pc = &sitePacketConn{PacketConn: pc, g: u.site}
	}
	return pc, nil
}

// RemoveConnByUfrag closes pion's connection for ufrag.
func (u *endpointUse) RemoveConnByUfrag(ufrag string) {
	e := u.e
	e.mu.Lock()
	s := e.byUfrag[ufrag]
	if s == nil || s.use != u {
		e.mu.Unlock()
		return
	}
	delete(e.byUfrag, ufrag)
	e.mu.Unlock()
	_ = s.Close()
}

// GetListenAddresses returns the Endpoint's address unless the
// Transport's IPFilter refuses it (loopback only with an IPFilter, as for
// a Transport's own sockets).
func (u *endpointUse) GetListenAddresses() []net.Addr {
	a := u.e.addr.Addr()
	if u.ipFilter != nil && !u.ipFilter(a) || u.ipFilter == nil && a.IsLoopback() {
		return nil
	}
	return []net.Addr{net.UDPAddrFromAddrPort(u.e.addr)}
}

// stunConn is the net.PacketConn on which pion's agent exchanges STUN for
// one ufrag through the Endpoint. Datagrams wait in a short queue of
// pooled records, so that an idle call holds no buffer.
type stunConn struct {
	use   *endpointUse
	ufrag string
	key   string // ufrag's local password, which signs the peer's checks
	// mac checks the peer's checks with key, peerMAC the peer's responses
	// with its password.
	mac, peerMAC stunMAC
	q            chan *stunRecord
	closed       chan struct{} // closed by Close
	noms         [4]nomination // recent authentic nominating requests from the peer (e.mu)
	nomAt        int
	done         atomic.Bool

	dlMu    sync.Mutex
	dlTimer *time.Timer
	dlCh    chan struct{} // closed when the read deadline passes
}

// stunRecord is one queued datagram and its source.
type stunRecord struct {
	src netip.AddrPort
	n   int
	buf [endpointBufSize]byte
}

var stunRecords = sync.Pool{New: func() any { return new(stunRecord) }}

type nomination struct {
	id  [12]byte
	src netip.AddrPort
}

func newSTUNConn(u *endpointUse, ufrag, key string) *stunConn {
	return &stunConn{use: u, ufrag: ufrag, key: key, q: make(chan *stunRecord, endpointSTUNQueue),
		closed: make(chan struct{}), dlCh: make(chan struct{})}
}

// nominatedBy remembers an authentic nominating request; a retransmission
// (or a copy from elsewhere) of one it holds takes no other slot, so that
// it pushes out no other nomination. Called with e.mu held.
func (s *stunConn) nominatedBy(id [12]byte, src netip.AddrPort) {
	for _, n := range s.noms {
		if n.src.IsValid() && n.id == id {
			return
		}
	}
	s.noms[s.nomAt] = nomination{id: id, src: src}
	s.nomAt = (s.nomAt + 1) % len(s.noms)
}

// nominationFrom returns the source of a remembered nominating request.
func (s *stunConn) nominationFrom(id []byte) (netip.AddrPort, bool) {
	s.use.e.mu.Lock()
	defer s.use.e.mu.Unlock()
	for _, n := range s.noms {
		if n.src.IsValid() && string(n.id[:]) == string(id) {
			return n.src, true
		}
	}
	return netip.AddrPort{}, false
}

func (s *stunConn) isClosed() bool { return s.done.Load() }

// deliver queues b from src for pion's reader; false if the queue is full
// or the connection closed.
func (s *stunConn) deliver(b []byte, src netip.AddrPort) bool {
	if s.done.Load() {
		return false
	}
	r := stunRecords.Get().(*stunRecord)
	r.src, r.n = src, copy(r.buf[:], b)
	select {
	case s.q <- r:
		return true
	default:
		stunRecords.Put(r)
		return false
	}
}

func (s *stunConn) ReadFrom(p []byte) (int, net.Addr, error) {
	s.dlMu.Lock()
	dl := s.dlCh
	s.dlMu.Unlock()
	select {
	case r := <-s.q:
		n := copy(p, r.buf[:r.n])
		src := r.src
		stunRecords.Put(r)
		return n, net.UDPAddrFromAddrPort(src), nil
	case <-s.closed:
		return 0, nil, fmt.Errorf("ice: endpoint: %w", net.ErrClosed)
	case <-dl:
		return 0, nil, timeoutError{op: "read"}
	}
}

func (s *stunConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if s.done.Load() {
		return 0, fmt.Errorf("ice: endpoint: %w", net.ErrClosed)
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("ice: endpoint: not a UDP address: %v", addr)
	}
	dst := ua.AddrPort()
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	e := s.use.e
	if endpointSTUN(p) {
		switch binary.BigEndian.Uint16(p[0:2]) {
		case 0x0101: // a success response: to a nomination, the path is chosen
			if src, ok := s.nominationFrom(p[8:20]); ok && src == dst {
				if err := e.claim(s.use, dst); err != nil {
					e.log.Debug("ice: endpoint", "err", err)
				}
			}
		default:
			e.notePending(s, p)
		}
	}
	if err := e.write(p, dst, s.use); err != nil {
		return 0, fmt.Errorf("ice: endpoint: %w", err)
	}
	return len(p), nil
}

func (s *stunConn) Close() error {
	if s.done.Swap(true) {
		return nil
	}
	close(s.closed)
	for {
		select {
		case r := <-s.q:
			stunRecords.Put(r)
		default:
			return nil
		}
	}
}

func (s *stunConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(s.use.e.addr) }

// SetDeadline sets the read deadline; writes do not block. pion sets one
// only to unblock its reader when it closes the candidate.
func (s *stunConn) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline makes ReadFrom return a timeout error at t.
func (s *stunConn) SetReadDeadline(t time.Time) error {
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	if s.dlTimer != nil {
		s.dlTimer.Stop()
		s.dlTimer = nil
	}
	select {
	case <-s.dlCh: // passed: a new deadline needs a new channel
		s.dlCh = make(chan struct{})
	default:
	}
	if t.IsZero() {
		return nil
	}
	ch := s.dlCh
	if d := time.Until(t); d > 0 {
		s.dlTimer = time.AfterFunc(d, func() {
			s.dlMu.Lock()
			defer s.dlMu.Unlock()
			if s.dlCh == ch {
				select {
				case <-ch:
				default:
					close(ch)
				}
			}
		})
		return nil
	}
	close(ch)
	return nil
}

func (s *stunConn) SetWriteDeadline(time.Time) error { return nil }

// endpointConn is the net.Conn that Connect returns on an Endpoint: the
// Endpoint's reader writes the call's datagrams into its buffer, which the
// media session reads; writes go to the selected pair's remote address.
type endpointConn struct {
	use    *endpointUse
	q      chan *mediaRecord
	shut   chan struct{} // closed by fail or Close
	isShut atomic.Bool   // shut is closed (a cheaper look for the reader)
	once   sync.Once
	dl     readDeadline

	e         *Endpoint // use.e
	mu        sync.Mutex
	closed    bool
	err       error // why reads and writes fail: closed, endpoint closed, refused
	writeDead time.Time
	dst       netip.AddrPort // use.remote, or the zero AddrPort for none (setRemoteLocked)

	// Push delivery (PushDatagrams): once pushing is set, deliver calls
	// push instead of queueing. One goroutine at a time runs push (busy);
	// a datagram that arrives meanwhile (the reader and the hand-over
	// goroutine both deliver) waits in pend, and the running one delivers
	// it next, so that push is never called concurrently or reentrantly
	// and datagrams keep their order.
	pushing atomic.Bool
	pmu     sync.Mutex
	push    func([]byte)
	pushEnd func(error)
	busy    bool
	pend    []*mediaRecord // at most endpointMediaQueue
	ended   bool
	// qDrained: a push found the queue empty, so the pushes after it
	// need not look there (a look loads the channel's own line, cold at a
	// gateway). pushQueued clears it: a datagram that deliver queued as
	// push began takes that path.
	qDrained bool
}

// mediaRecord is one datagram waiting for a call's reader.
type mediaRecord struct {
	n   int
	buf [endpointBufSize]byte
}

var mediaRecords = sync.Pool{New: func() any { return new(mediaRecord) }}

func newEndpointConn(u *endpointUse) *endpointConn {
	return &endpointConn{use: u, e: u.e, q: make(chan *mediaRecord, endpointMediaQueue), shut: make(chan struct{})}
}

// deliver hands b to the session: pushed (PushDatagrams), or queued for
// the reader with one copy into a pooled record and one channel send,
// which hands the record straight to a waiting reader. It reports false
// when b was dropped.
func (c *endpointConn) deliver(b []byte) bool {
	if c.isShut.Load() {
		return false
	}
	if c.pushing.Load() {
		return c.pushOne(b)
	}
	if !c.enqueue(b) {
		return false
	}
	if c.pushing.Load() {
		// PushDatagrams ran meanwhile and may have emptied the queue
		// before b was in it.
		c.pushQueued()
	}
	return true
}

// enqueue queues a copy of b in a pooled record for the reader, or
// reports false when the queue is full.
func (c *endpointConn) enqueue(b []byte) bool {
	r := mediaRecords.Get().(*mediaRecord)
	r.n = copy(r.buf[:], b)
	select {
	case c.q <- r:
		return true
	default:
		mediaRecords.Put(r)
		return false
	}
}

// deliverInProcess is deliver for a datagram written in this process: a
// push of it runs on the hand-over goroutine, never on the writer's, and
// never in the writer's buffer.
func (c *endpointConn) deliverInProcess(b []byte) bool {
	if c.isShut.Load() {
		return false
	}
	e := c.use.e
	if c.pushing.Load() {
		return e.handOver(c, b)
	}
	if !c.enqueue(b) {
		return false
	}
	if c.pushing.Load() {
		c.queuedAsPushBegan()
	}
	return true
}

// queuedAsPushBegan follows a datagram deliverInProcess queued while
// PushDatagrams ran, which may have emptied the queue before it was in
// it: the hand-over goroutine pushes it, or, should the nudge be lost,
// the push of the call's next datagram, which looks in the queue again.
func (c *endpointConn) queuedAsPushBegan() {
	c.pmu.Lock()
	c.qDrained = false
	c.pmu.Unlock()
	c.e.nudge(c)
}

// PushDatagrams makes the Endpoint's reader (or its hand-over goroutine,
// for datagrams from the process) call deliver with each of this call's
// datagrams, those queued first, instead of queueing them for Read
// (media's datagramPusher): never concurrently, in the order received, b
// valid until deliver returns. A datagram that arrives while deliver runs
// on another goroutine waits (at most 64) and is delivered by that
// goroutine next. end is called once when delivery stops: Close, the
// Transport's Close or the Endpoint's; nothing is delivered after it, and
// on a conn closed already nothing it queued is delivered.
func (c *endpointConn) PushDatagrams(deliver func(b []byte), end func(err error)) {
	c.pmu.Lock()
	c.push, c.pushEnd = deliver, end
	c.pushing.Store(true)
	c.pmu.Unlock()
	if c.isShut.Load() {
		// Closed already: what it queued is dropped, not pushed.
		c.endPush()
		return
	}
	c.pushQueued()
	if c.isShut.Load() {
		c.endPush()
	}
}

// pushOne pushes b now, or copies it into pend when a push is running.
func (c *endpointConn) pushOne(b []byte) bool {
	c.pmu.Lock()
	if c.ended {
		c.pmu.Unlock()
		return false
	}
	if c.busy {
		defer c.pmu.Unlock()
		if len(c.pend) >= endpointMediaQueue {
			return false
		}
		r := mediaRecords.Get().(*mediaRecord)
		r.n = copy(r.buf[:], b)
		c.pend = append(c.pend, r)
		return true
	}
	if !c.qDrained && len(c.q) > 0 {
		// Datagrams queued before PushDatagrams go first: b follows them.
		r := mediaRecords.Get().(*mediaRecord)
		r.n = copy(r.buf[:], b)
		c.pend = append(c.pend, r)
		c.busy = true
		c.pmu.Unlock()
		c.drainPushed()
		return true
	}
	c.busy = true
	push := c.push
	c.pmu.Unlock()
	push(b)
	c.drainPushed()
	return true
}

// pushQueued delivers what waits in the queue and in pend, unless a push
// is running (it will).
func (c *endpointConn) pushQueued() {
	c.pmu.Lock()
	c.qDrained = false // even when busy: the running push looks again
	if c.busy || c.ended {
		c.pmu.Unlock()
		return
	}
	c.busy = true
	c.pmu.Unlock()
	c.drainPushed()
}

// drainPushed is run by the goroutine that set busy: it delivers the
// queue (datagrams from before PushDatagrams), then pend, then clears
// busy, and stops once the push has ended. Each look is under pmu, which
// a writer to either takes after adding to it, so nothing is left behind.
func (c *endpointConn) drainPushed() {
	for {
		c.pmu.Lock()
		if c.ended {
			c.busy = false
			c.pmu.Unlock()
			return
		}
		var r *mediaRecord
		if !c.qDrained {
			select {
			case r = <-c.q: // only before PushDatagrams, or in its race
			default:
				c.qDrained = true
			}
		}
		if r == nil {
			if len(c.pend) > 0 {
				r = c.pend[0]
				n := copy(c.pend, c.pend[1:])
				c.pend[n] = nil
				c.pend = c.pend[:n]
			}
		}
		if r == nil {
			c.busy = false
			c.pmu.Unlock()
			return
		}
		c.pmu.Unlock()
		c.push(r.buf[:r.n])
		mediaRecords.Put(r)
	}
}

// endPush stops push delivery for good and tells the session why.
func (c *endpointConn) endPush() {
	c.pmu.Lock()
	if c.ended || c.push == nil {
		c.pmu.Unlock()
		return
	}
	c.ended = true
	for _, r := range c.pend {
		mediaRecords.Put(r)
	}
	c.pend = nil
	end := c.pushEnd
	c.pmu.Unlock()
	end(c.failure("read"))
}

// shutdown wakes the reader for good; queued datagrams are dropped.
func (c *endpointConn) shutdown() {
	c.once.Do(func() {
		c.isShut.Store(true)
		close(c.shut)
		c.endPush()
		for len(c.q) > 0 {
			select {
			case r := <-c.q:
				mediaRecords.Put(r)
			default:
			}
		}
	})
}

// fail makes Read and Write fail with err from now on.
func (c *endpointConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.shutdown()
}

func (c *endpointConn) refuse(err error) { c.fail(err) }

// wait: the Endpoint's reader is not the Transport's to join.
func (c *endpointConn) wait() {}

func (c *endpointConn) failure(op string) error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err == nil {
		err = net.ErrClosed
	}
	return fmt.Errorf("ice: %s: %w", op, err)
}

// Read returns the next datagram; if p is shorter, the rest is lost and
// the error wraps io.ErrShortBuffer.
func (c *endpointConn) Read(p []byte) (int, error) {
	r, err := c.next()
	if err != nil {
		return 0, err
	}
	n := copy(p, r.buf[:r.n])
	short := n < r.n
	mediaRecords.Put(r)
	if short {
		return n, fmt.Errorf("ice: read: %w", io.ErrShortBuffer)
	}
	return n, nil
}

// ReadDatagram is Read without a copy: it returns the next datagram in
// the Endpoint's own buffer, valid until ReleaseDatagram(held). The media
// session uses it, so that a call waiting for media holds no read buffer
// of its own (media.datagramReader).
func (c *endpointConn) ReadDatagram() (b []byte, held any, err error) {
	r, err := c.next()
	if err != nil {
		return nil, nil, err
	}
	return r.buf[:r.n], r, nil
}

// ReleaseDatagram hands back a datagram from ReadDatagram.
func (c *endpointConn) ReleaseDatagram(held any) {
	if r, ok := held.(*mediaRecord); ok {
		mediaRecords.Put(r)
	}
}

// next waits for the next queued datagram, the read deadline or the end.
func (c *endpointConn) next() (*mediaRecord, error) {
	select {
	case r := <-c.q:
		return r, nil
	default:
	}
	for {
		at, fired := c.dl.wait()
		select {
		case r := <-c.q:
			return r, nil
		case <-c.shut:
			return nil, c.failure("read")
		case <-fired:
			if !at.IsZero() && !time.Now().Before(at) {
				return nil, timeoutError{op: "read"}
			}
		}
	}
}

func (c *endpointConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed, failed, dl, dst := c.closed, c.err, c.writeDead, c.dst
	c.mu.Unlock()
	if closed || failed != nil {
		return 0, c.failure("write")
	}
	if !dl.IsZero() && !time.Now().Before(dl) {
		return 0, timeoutError{op: "write"}
	}
	if !dst.IsValid() {
		// No path selected yet or during a restart: dropped, as on a
		// network without a route.
		return len(p), nil
	}
	if err := c.e.write(p, dst, c.use); err != nil {
		return 0, fmt.Errorf("ice: write: %w", err)
	}
	return len(p), nil
}

// Close closes this connection; the Transport keeps its place on the
// Endpoint until Transport.Close.
func (c *endpointConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("ice: close conn: %w", net.ErrClosed)
	}
	c.closed = true
	c.mu.Unlock()
	c.shutdown()
	return nil
}

func (c *endpointConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.use.e.addr) }

func (c *endpointConn) RemoteAddr() net.Addr {
	if r := c.use.remote.Load(); r != nil {
		return net.UDPAddrFromAddrPort(*r)
	}
	return nil
}

func (c *endpointConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *endpointConn) SetReadDeadline(t time.Time) error {
	c.dl.set(t)
	return nil
}

// readDeadline is a read deadline as a channel that is closed when it
// passes or moves (a blocked reader then looks again); no timer runs
// without a deadline.
type readDeadline struct {
	mu    sync.Mutex
	at    time.Time
	timer *time.Timer
	gen   *deadlineGen // nil: no deadline was ever set
}

type deadlineGen struct {
	ch   chan struct{}
	once sync.Once
}

func (g *deadlineGen) fire() { g.once.Do(func() { close(g.ch) }) }

// wait returns the deadline and a channel closed when it passes or
// moves (nil, which blocks for ever, if none was ever set).
func (d *readDeadline) wait() (time.Time, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == nil {
		return time.Time{}, nil
	}
	return d.at, d.gen.ch
}

func (d *readDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	old := d.gen
	g := &deadlineGen{ch: make(chan struct{})}
	d.at, d.gen = t, g
	if !t.IsZero() {
		if dur := time.Until(t); dur <= 0 {
			g.fire()
		} else {
			d.timer = time.AfterFunc(dur, g.fire)
		}
	}
	if old != nil {
		old.fire() // wake a blocked reader to look at the new deadline
	}
}

func (c *endpointConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDead = t
	c.mu.Unlock()
	return nil
}

// pathConn is the net.Conn that Connect returns: the pump over pion's
// connection, or an Endpoint's.
type pathConn interface {
	net.Conn
	refuse(err error)
	wait()
}

var (
	_ pathConn = (*conn)(nil)
	_ pathConn = (*endpointConn)(nil)
)

// claimSelected routes the selected pair's 5-tuple to this Transport on
// its Endpoint.
func (t *Transport) claimSelected() error {
	ag := t.ag()
	if ag == nil {
		return fmt.Errorf("%w: no selected pair", ErrNoPath)
	}
	pair, err := ag.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return fmt.Errorf("%w: no selected pair", ErrNoPath)
	}
	a, err := netip.ParseAddr(pair.Remote.Address())
	if err != nil {
		return fmt.Errorf("ice: selected pair: %w", err)
	}
	return t.ep.e.claim(t.ep, netip.AddrPortFrom(a.Unmap(), uint16(pair.Remote.Port())))
}

// release stops routing to u until its next selected pair: writes are
// dropped meanwhile, as during any ICE restart.
func (e *Endpoint) release(u *endpointUse) {
	e.mu.Lock()
	e.releaseTupleLocked(u)
	u.setRemoteLocked(netip.AddrPort{})
	e.mu.Unlock()
}

// checkEndpoint reports settings a Transport on an Endpoint cannot honour.
func (c Config) checkEndpoint() error {
	switch {
	case len(c.Servers) > 0:
		return errors.New("ice: a Transport on an Endpoint gathers its host candidate only; leave Servers empty")
	case c.UDPMux != nil:
		return errors.New("ice: Endpoint and UDPMux cannot both be set")
	case c.Policy == RelayOnly:
		return errors.New("ice: a Transport on an Endpoint has no relay candidates and cannot be RelayOnly")
	}
	for _, n := range c.Networks {
		if n == TCP4 || n == TCP6 {
			return errors.New("ice: a Transport on an Endpoint gathers on UDP only; leave TCP networks out")
		}
	}
	return nil
}
