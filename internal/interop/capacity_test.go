package interop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// The capacity benchmark: N concurrent two-way calls of each stack in
// this process, both ends of every call here, loopback, a 160-byte frame
// every 20 ms each way (the size of 20 ms of PCMU). Each frame carries its
// send time and the phase of the run it was sent in, so loss in the
// measurement window is exact: a frame sent in the window either arrives
// (counted at the receiver by the phase it carries) or is lost.
//
// Four sender goroutines write the frames, by default every frame at the
// start of the period. With SECURECALL_CAPACITY_SEND=spread each sender
// spreads its send groups (an Endpoint's or socket's ends, written in one
// batch, or a share of the ends) evenly over twenty 1 ms offsets into the
// period, as the frames of a gateway's calls, started at random moments,
// fall due all through it: with the burst, the floor rows (no stack at
// all) skipped sends at 45% CPU from 3,200 pairs, so at high N the burst,
// not the stack, can be the limit.
//
// Rerun with (bounded: about N/50 s of setup plus 2 s + window + 1 s per
// stack and N):
//
//	cd internal/interop && go test -run '^$' -bench Capacity -benchtime 1x -timeout 30m
//
// SECURECALL_CAPACITY_PAIRS lists the N (default "100,200,400"), for
// every stack or per stack (capacityPlan), and
// SECURECALL_CAPACITY_WINDOW the window (default 5s).
// SECURECALL_CAPACITY_PERF=1 counts the process's system calls over each
// window with perf, SECURECALL_CAPACITY_STRACE=1 with strace (see
// syscallCounter), and SECURECALL_CAPACITY_CPUPROFILE=dir writes a CPU
// profile of each window there. The stacks:
//
//   - securecall-endpoint: securecall on shared ice.Endpoints, read with
//     ReadRTP on a goroutine per end;
//   - securecall-push: the same with push delivery (MediaConfig.OnRTP) and
//     each tick's writes of one Endpoint in one Endpoint.Batch, as a
//     gateway would: no goroutine per end;
//   - securecall: calls with their own sockets;
//   - pion: pion/webrtc with its defaults;
//   - udp-floor: no stack at all, a connected socket and a reader
//     goroutine per end: the floor under the first rows;
//   - udp-floor-batch: no stack, with securecall-push's I/O (shared
//     sockets, recvmmsg on one goroutine per socket, each tick's writes
//     in sendmmsg): the floor under securecall-push.

const (
	phaseWarmup  = 1
	phaseMeasure = 2
	phaseDrain   = 3
	frameBytes   = 160
	framePeriod  = 20 * time.Millisecond
	// capacitySenders is how many goroutines send the frames of all ends.
	capacitySenders = 4
	// capacitySlots is how many offsets into the period the senders
	// spread their send groups over (1 ms apart) with
	// SECURECALL_CAPACITY_SEND=spread.
	capacitySlots = 20
)

// capacityStack is one stack under test: how to make the two ends of one
// call, and what it needs torn down after all calls.
type capacityStack struct {
	name string
	// newPairs returns a function making pair i of n, and a cleanup.
	newPairs func(n int) (func(i int) (endpoint, endpoint, error), func(), error)
	// socketIO, if set, returns the socket system calls (recvmmsg,
	// sendmmsg, sendto) the stack made so far and the datagrams they moved.
	socketIO func() (calls, datagrams uint64)
	// sendGroups, if set, splits the ends (ends[2i] and ends[2i+1] are
	// pair i) into groups that a sender writes to together, inside
	// batch; if nil, sender s writes to the ends j with j%senders == s,
	// one at a time.
	sendGroups func(ends []endpoint) []sendGroup
}

// sendGroup is a set of ends one sender writes to each tick, inside
// batch (if set).
type sendGroup struct {
	ends  []int
	batch func(func())
}

// pushEndpoint is an end whose stack delivers received frames to a
// function on the stack's own goroutine (MediaConfig.OnRTP), not through
// ReadAudio: the harness gives it its receiver instead of a goroutine.
type pushEndpoint interface {
	endpoint
	pushTo(r *capacityReceiver)
}

func capacityStacks() []capacityStack {
	grid, floors := &endpointGrid{}, &floorGrid{}
	return []capacityStack{
		{name: "securecall-endpoint", newPairs: grid.pairs, socketIO: grid.io},
		{name: "securecall-push", newPairs: grid.pushPairs, socketIO: grid.io, sendGroups: grid.sendGroups},
		{name: "securecall", newPairs: func(int) (func(int) (endpoint, endpoint, error), func(), error) {
			return func(int) (endpoint, endpoint, error) { return securecallPair(memoryKeys{}, sdp.KeyingDTLS) }, func() {}, nil
		}},
		{name: "pion", newPairs: func(int) (func(int) (endpoint, endpoint, error), func(), error) {
			return func(int) (endpoint, endpoint, error) { return pionPair() }, func() {}, nil
		}},
		{name: "udp-floor", newPairs: func(int) (func(int) (endpoint, endpoint, error), func(), error) {
			return func(int) (endpoint, endpoint, error) { return floorPair() }, func() {}, nil
		}},
		{name: "udp-floor-batch", newPairs: floors.pairs, socketIO: floors.io, sendGroups: floors.sendGroups},
	}
}

// floorEndpoint is no stack at all: a connected loopback UDP socket per
// call end, a 12-byte RTP header in the clear, no ICE, no SRTP, no RTCP.
// Its row is the floor under every stack in this harness: the kernel's
// loopback path, one system call per datagram each way, one reader
// goroutine woken per datagram, and the harness itself.
type floorEndpoint struct {
	conn *net.UDPConn
	out  [12 + frameBytes]byte
	seq  uint16
	in   [1500]byte
}

func floorPair() (endpoint, endpoint, error) {
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	a, err := net.ListenUDP("udp4", lo)
	if err != nil {
		return nil, nil, err
	}
	b, err := net.DialUDP("udp4", lo, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		a.Close()
		return nil, nil, err
	}
	a.Close() // reopened connected to b, on the same port
	if a, err = net.DialUDP("udp4", a.LocalAddr().(*net.UDPAddr), b.LocalAddr().(*net.UDPAddr)); err != nil {
		b.Close()
		return nil, nil, err
	}
	return &floorEndpoint{conn: a}, &floorEndpoint{conn: b}, nil
}

func (f *floorEndpoint) Offer(context.Context) (string, error)          { return "", nil }
func (f *floorEndpoint) Answer(context.Context, string) (string, error) { return "", nil }
func (f *floorEndpoint) SetAnswer(context.Context, string) error        { return nil }
func (f *floorEndpoint) Connect(context.Context) error                  { return nil }
func (f *floorEndpoint) Codec() (string, uint8)                         { return "pcmu", 0 }
func (f *floorEndpoint) Close() error                                   { return f.conn.Close() }

func (f *floorEndpoint) WriteAudio(payload []byte) error {
	f.seq++
	f.out[0], f.out[1] = 0x80, 0
	binary.BigEndian.PutUint16(f.out[2:4], f.seq)
	n := copy(f.out[12:], payload)
	_, err := f.conn.Write(f.out[:12+n])
	return err
}

func (f *floorEndpoint) ReadAudio(_ context.Context, buf []byte) (uint8, int, error) {
	for {
		n, err := f.conn.Read(f.in[:])
		if err != nil {
			return 0, 0, err
		}
		if n >= 12 {
			return 0, copy(buf, f.in[12:n]), nil
		}
	}
}

// endpointGrid puts the calls on shared ice.Endpoints: media is told apart
// by 5-tuple, so call i runs between caller endpoint i%k and callee
// endpoint i/k (k = ceil(sqrt(n))), and no two calls share a 5-tuple:
// 2k sockets for n calls, about sqrt(n) calls on each.
type endpointGrid struct{ eps []*ice.Endpoint }

func (g *endpointGrid) io() (calls, datagrams uint64) {
	for _, e := range g.eps {
		st := e.Stats()
		calls += st.ReadBatches + st.WriteBatches
		datagrams += st.Received + st.Sent
	}
	return calls, datagrams
}

func (g *endpointGrid) pairs(n int) (func(int) (endpoint, endpoint, error), func(), error) {
	return g.makePairs(n, false)
}

// pushPairs is pairs with push delivery (MediaConfig.OnRTP) at both ends.
func (g *endpointGrid) pushPairs(n int) (func(int) (endpoint, endpoint, error), func(), error) {
	return g.makePairs(n, true)
}

// sendGroups groups the ends by Endpoint, each group written in one
// Endpoint.Batch per tick, as a gateway would.
func (g *endpointGrid) sendGroups(ends []endpoint) []sendGroup {
	batches := make([]func(func()), len(g.eps))
	for i, e := range g.eps {
		batches[i] = e.Batch
	}
	return gridGroups(len(ends), batches)
}

// gridSlot is where end j (ends[2i] and ends[2i+1] are pair i) sits on a
// grid of 2k sockets: the caller of pair i on socket i%k, the callee on
// k+i/k, so that no two pairs share a 5-tuple.
func gridSlot(j, k int) int {
	i := j / 2
	if j%2 == 0 {
		return i % k
	}
	return k + i/k
}

// gridGroups makes one send group per grid socket, written inside that
// socket's batch.
func gridGroups(ends int, batches []func(func())) []sendGroup {
	k := len(batches) / 2
	groups := make([]sendGroup, len(batches))
	for i, b := range batches {
		groups[i].batch = b
	}
	for j := range ends {
		e := gridSlot(j, k)
		groups[e].ends = append(groups[e].ends, j)
	}
	return groups
}

// pushCallEndpoint is a callEndpoint with push delivery: its OnRTP hands
// each frame to the harness's receiver.
type pushCallEndpoint struct {
	*callEndpoint
	recv atomic.Pointer[capacityReceiver]
}

func (e *pushCallEndpoint) pushTo(r *capacityReceiver) { e.recv.Store(r) }

func (e *pushCallEndpoint) onRTP(_ media.RTPHeader, payload []byte) {
	if r := e.recv.Load(); r != nil {
		r.frame(payload)
	}
}

func newPushCallEndpoint(cfg securecall.Config) (*pushCallEndpoint, error) {
	e := &pushCallEndpoint{}
	cfg.Media.OnRTP = e.onRTP
	c, err := newCallEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	e.callEndpoint = c
	return e, nil
}

// openGrid opens the 2k sockets of a grid for n pairs (see gridSlot),
// k = ceil(sqrt(n)), and returns them with k and a cleanup that closes
// them; if one fails to open, those opened are closed.
func openGrid[S any](n int, open func() (S, error), close func(S)) ([]S, int, func(), error) {
	k := int(math.Ceil(math.Sqrt(float64(n))))
	var socks []S
	cleanup := func() {
		for _, s := range socks {
			close(s)
		}
	}
	for range 2 * k {
		s, err := open()
		if err != nil {
			cleanup()
			return nil, 0, nil, err
		}
		socks = append(socks, s)
	}
	return socks, k, cleanup, nil
}

func (g *endpointGrid) makePairs(n int, push bool) (func(int) (endpoint, endpoint, error), func(), error) {
	eps, k, cleanup, err := openGrid(n,
		func() (*ice.Endpoint, error) { return ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil) },
		func(e *ice.Endpoint) { e.Close() })
	if err != nil {
		return nil, nil, err
	}
	g.eps = eps
	return func(i int) (endpoint, endpoint, error) {
		oc, ac := loopbackICE(), loopbackICE()
		oc.Endpoint, ac.Endpoint = eps[gridSlot(2*i, k)], eps[gridSlot(2*i+1, k)]
		newEnd := func(cfg securecall.Config) (endpoint, error) {
			if push {
				return newPushCallEndpoint(cfg)
			}
			return newCallEndpoint(cfg)
		}
		o, err := newEnd(securecall.Config{ICE: oc, Keying: sdp.KeyingDTLS})
		if err != nil {
			return nil, nil, err
		}
		a, err := newEnd(securecall.Config{ICE: ac, Keying: sdp.KeyingDTLS})
		if err != nil {
			o.Close()
			return nil, nil, err
		}
		return o, a, nil
	}, cleanup, nil
}

// capacityResult is one stack at one N.
type capacityResult struct {
	stack            string
	pairs            int
	sent, lost       uint64
	cpuPercent       float64 // of all cores, over the window
	coresPer1000     float64
	heapPerPair      float64
	goroutinesPair   float64
	p50, p99         time.Duration
	lateSends        uint64 // frames sent more than a period after their time
	skipped          uint64 // frames not sent: the sender was more than a period behind
	load1            string // load average when the window ended
	setupFailures    int
	setup            time.Duration
	windowSeconds    float64
	syscallsPerFrame float64       // socket system calls per datagram; -1: not measured
	straceCalls      float64       // all system calls per frame (perf or strace); -1: not measured
	straceTop        string        // the first lines of the counter's summary
	schedP99         time.Duration // how long a runnable goroutine waited for a core, p99 over the window
	allocsPerFrame   float64       // heap allocations of the whole process per frame sent, over the window
	stealPercent     float64       // the host's steal time over the window, percent of all cores
	gcCycles         uint64        // garbage collections that ended in the window
}

// latencyHist is a log-scale histogram of one-way latencies: bucket b
// holds latencies in [1.05^b, 1.05^(b+1)) microseconds.
type latencyHist [400]uint32

func (h *latencyHist) add(d time.Duration) {
	us := float64(d.Microseconds())
	b := 0
	if us > 1 {
		b = int(math.Log(us) / math.Log(1.05))
	}
	h[min(max(b, 0), len(h)-1)]++
}

func (h *latencyHist) quantile(q float64) time.Duration {
	var total uint64
	for _, c := range h {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for b, c := range h {
		seen += uint64(c)
		if seen >= want {
			return time.Duration(math.Pow(1.05, float64(b+1))) * time.Microsecond
		}
	}
	return 0
}

// capacityReceiver reads one endpoint and counts frames by phase.
type capacityReceiver struct {
	got  [4]atomic.Uint64
	hist latencyHist // written only by the receiver, read after it stopped
	done chan struct{}
}

func (r *capacityReceiver) run(ctx context.Context, e endpoint) {
	defer close(r.done)
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	_, isPion := e.(*pionEndpoint)
	for {
		_, n, err := e.ReadAudio(ctx, buf)
		if err != nil {
			return
		}
		payload := buf[:n]
		if isPion {
			if pkt.Unmarshal(buf[:n]) != nil {
				continue
			}
			payload = pkt.Payload
		}
		r.frame(payload)
	}
}

// frame counts one received frame. For one endpoint it is called by one
// goroutine at a time: run's, or the stack's (pushEndpoint).
func (r *capacityReceiver) frame(payload []byte) {
	if len(payload) != frameBytes {
		return
	}
	sentAt := int64(binary.BigEndian.Uint64(payload[0:8]))
	phase := payload[8]
	if phase > phaseDrain {
		return
	}
	r.got[phase].Add(1)
	if phase == phaseMeasure {
		r.hist.add(time.Duration(time.Now().UnixNano() - sentAt))
	}
}

// heapCounters returns the process's heap allocations and completed GC
// cycles so far.
func heapCounters() (allocs, cycles uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		allocs = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		cycles = s[1].Value.Uint64()
	}
	return allocs, cycles
}

// schedLatencies reads the runtime's histogram of the time goroutines
// spent runnable before they ran.
func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	h := s[0].Value.Float64Histogram()
	return &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
}

// schedQuantile returns quantile q of the latencies recorded between two
// readings of schedLatencies (the upper bound of its bucket).
func schedQuantile(before, after *metrics.Float64Histogram, q float64) time.Duration {
	if before == nil || after == nil || len(before.Counts) != len(after.Counts) {
		return 0
	}
	var total uint64
	diff := make([]uint64, len(after.Counts))
	for i := range diff {
		diff[i] = after.Counts[i] - before.Counts[i]
		total += diff[i]
	}
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range diff {
		if seen += c; seen >= want {
			edge := after.Buckets[i+1]
			if math.IsInf(edge, 1) { // the last bucket has no upper bound
				edge = after.Buckets[i]
			}
			return time.Duration(edge * float64(time.Second))
		}
	}
	return 0
}

// windowProfile starts a CPU profile of the window when
// SECURECALL_CAPACITY_CPUPROFILE names a directory: one file per stack and
// N, without the set-up that a -cpuprofile of the whole run includes.
func windowProfile(stack string, n int) (stop func() error, err error) {
	dir := os.Getenv("SECURECALL_CAPACITY_CPUPROFILE")
	if dir == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", stack, n)))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// sendGroupsOf returns the stack's send groups, or the default: one group
// per sender and slot, end j in group j%(senders*slots), so sender s
// writes to the ends j with j%senders == s, spread over the period.
func sendGroupsOf(stack capacityStack, ends []endpoint) []sendGroup {
	if stack.sendGroups != nil {
		return stack.sendGroups(ends)
	}
	groups := make([]sendGroup, capacitySenders*capacitySlots)
	for j := range ends {
		groups[j%len(groups)].ends = append(groups[j%len(groups)].ends, j)
	}
	return groups
}

// cpuTicks returns this process's user and system time in clock ticks
// (USER_HZ, 100 on Linux) from /proc/self/stat.
func cpuTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command may contain spaces: fields count from after its ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, errors.New("short /proc/self/stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	return u + st, errors.Join(err1, err2)
}

// stealTicks returns the machine's steal time so far (/proc/stat, clock
// ticks summed over its CPUs): time the hypervisor ran something else
// while a CPU of this machine had work. It is the host's load, not this
// process's, and where it is high in a window, late and skipped sends
// there say little about the stack. 0 where there is no such line.
func stealTicks() uint64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	v, _ := strconv.ParseUint(f[8], 10, 64)
	return v
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runCapacity brings up n pairs of stack, sends both ways for 2 s of
// warm-up, the window and 1 s of drain, and measures.
func runCapacity(ctx context.Context, stack capacityStack, n int, window time.Duration) (capacityResult, error) {
	res := capacityResult{stack: stack.name, pairs: n, windowSeconds: window.Seconds(), syscallsPerFrame: -1, straceCalls: -1}
	baseHeap, baseG := settle()
	newPair, cleanup, err := stack.newPairs(n)
	if err != nil {
		return res, err
	}
	defer cleanup()
	ends := make([]endpoint, 2*n)
	defer func() {
		for _, e := range ends {
			if e != nil {
				e.Close()
			}
		}
	}()
	start := time.Now()
	var (
		mu     sync.Mutex
		errAll []error
		wg     sync.WaitGroup
		sem    = make(chan struct{}, 8)
	)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 0; ; attempt++ {
				o, a, err := newPair(i)
				if err == nil {
					if err = connectPair(ctx, o, a); err == nil {
						ends[2*i], ends[2*i+1] = o, a
						return
					}
					o.Close()
					a.Close()
				}
				mu.Lock()
				res.setupFailures++
				if attempt >= 2 || ctx.Err() != nil {
					errAll = append(errAll, fmt.Errorf("pair %d: %w", i, err))
					mu.Unlock()
					return
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.setup = time.Since(start)
	if len(errAll) > 0 {
		return res, fmt.Errorf("%d pairs failed to connect: %w", len(errAll), errAll[0])
	}

	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	recvs := make([]*capacityReceiver, len(ends))
	readers := 0
	for i, e := range ends {
		recvs[i] = &capacityReceiver{done: make(chan struct{})}
		if pe, ok := e.(pushEndpoint); ok {
			pe.pushTo(recvs[i])
			close(recvs[i].done)
			continue
		}
		readers++
		go recvs[i].run(rctx, e)
	}
	groups := sendGroupsOf(stack, ends)
	spread := capacitySpread()
	var phase atomic.Uint32
	phase.Store(phaseWarmup)
	var sentMeasure, sentAll, late, skipped atomic.Uint64
	stop := make(chan struct{})
	const senders = capacitySenders
	var swg sync.WaitGroup
	for s := range senders {
		swg.Add(1)
		go func() {
			defer swg.Done()
			frame := make([]byte, frameBytes)
			for i := range frame {
				frame[i] = 0xff
			}
			// This sender's groups, each at its offset into the period:
			// spread evenly over capacitySlots slots (the calls of a
			// gateway start at random moments, so their frames fall due
			// all through the period), or all at its start (burst).
			var mine []int
			for gi := s; gi < len(groups); gi += senders {
				mine = append(mine, gi)
			}
			offset := func(m int) time.Duration {
				if !spread {
					return 0
				}
				return time.Duration(m*capacitySlots/max(len(mine), 1)) * (framePeriod / capacitySlots)
			}
			total := 0
			for _, gi := range mine {
				total += len(groups[gi].ends)
			}
			tick := time.Now() // the start of the current period
			timer := time.NewTimer(0)
			defer timer.Stop()
			for {
				for m := 0; m < len(mine); {
					due := tick.Add(offset(m))
					if wait := time.Until(due); wait > 0 {
						timer.Reset(wait)
						select {
						case <-stop:
							return
						case <-timer.C:
						}
					} else {
						select {
						case <-stop:
							return
						default:
						}
					}
					// Every group due by now leaves in this round.
					for ; m < len(mine) && !tick.Add(offset(m)).After(time.Now()); m++ {
						g := groups[mine[m]]
						due := tick.Add(offset(m))
						send := func() {
							for _, j := range g.ends {
								now := time.Now()
								if now.Sub(due) > framePeriod {
									late.Add(1)
								}
								p := uint8(phase.Load())
								binary.BigEndian.PutUint64(frame[0:8], uint64(now.UnixNano()))
								frame[8] = p
								if ends[j].WriteAudio(frame) == nil {
									sentAll.Add(1)
									if p == phaseMeasure {
										sentMeasure.Add(1)
									}
								}
							}
						}
						if g.batch != nil {
							g.batch(send)
						} else {
							send()
						}
					}
				}
				tick = tick.Add(framePeriod)
				// A sender more than a period behind skips the frames it
				// missed rather than sending them in a burst, so that every
				// stack is offered the same rate; they are counted.
				if behind := time.Since(tick); behind > framePeriod {
					missed := int(behind / framePeriod)
					skipped.Add(uint64(missed * total))
					tick = tick.Add(time.Duration(missed) * framePeriod)
				}
			}
		}()
	}
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleep(2 * time.Second); err != nil {
		close(stop)
		swg.Wait()
		return res, err
	}
	heap, g := settle()
	harness := readers + senders // one reader per endpoint that is read, the senders
	res.heapPerPair = float64(int64(heap)-int64(baseHeap)) / float64(n)
	res.goroutinesPair = float64(g-baseG-harness) / float64(n)
	lateBefore, skippedBefore := late.Load(), skipped.Load()
	t0, err := cpuTicks()
	if err != nil {
		close(stop)
		swg.Wait()
		return res, err
	}
	var io0calls, io0dgrams uint64
	if stack.socketIO != nil {
		io0calls, io0dgrams = stack.socketIO()
	}
	var tracer syscallCounter
	var tracedFrom uint64
	if start := syscallCounterFromEnv(); start != nil {
		// The counter counts from its attach (which takes a few ms),
		// warm-up frames included, so frames are counted from its start.
		tracedFrom = sentAll.Load()
		if tracer, err = start(); err != nil {
			close(stop)
			swg.Wait()
			return res, err
		}
	}
	stopProfile, err := windowProfile(stack.name, n)
	if err != nil {
		close(stop)
		swg.Wait()
		return res, err
	}
	sched0 := schedLatencies()
	allocs0, cycles0 := heapCounters()
	steal0 := stealTicks()
	sent0 := sentAll.Load()
	w0 := time.Now()
	phase.Store(phaseMeasure)
	err = sleep(window)
	phase.Store(phaseDrain)
	elapsed := time.Since(w0)
	t1, _ := cpuTicks()
	allocs1, cycles1 := heapCounters()
	if steal1 := stealTicks(); steal1 >= steal0 {
		// Clock ticks of 1/100 s, as a percent of all cores over the window.
		res.stealPercent = float64(steal1-steal0) / elapsed.Seconds() / float64(runtime.NumCPU())
	}
	if s := sentAll.Load() - sent0; s > 0 {
		res.allocsPerFrame = float64(allocs1-allocs0) / float64(s)
	}
	res.gcCycles = cycles1 - cycles0
	if perr := stopProfile(); perr != nil && err == nil {
		err = perr
	}
	if tracer != nil {
		calls, terr := tracer.stop()
		res.straceTop = tracer.top(8)
		if terr != nil && err == nil {
			err = terr
		}
		if s := sentAll.Load() - tracedFrom; s > 0 {
			res.straceCalls = float64(calls) / float64(s)
		}
	}
	if stack.socketIO != nil {
		c, d := stack.socketIO()
		if d > io0dgrams {
			res.syscallsPerFrame = float64(c-io0calls) / float64(d-io0dgrams)
		}
	}
	res.load1 = loadAverage()
	res.schedP99 = schedQuantile(sched0, schedLatencies(), 0.99)
	res.lateSends = late.Load() - lateBefore
	res.skipped = skipped.Load() - skippedBefore
	if err == nil {
		err = sleep(time.Second) // frames of the window still in flight
	}
	close(stop)
	swg.Wait()
	rcancel()
	for _, e := range ends {
		e.Close()
	}
	for _, r := range recvs {
		<-r.done
	}
	if err != nil {
		return res, err
	}
	var got uint64
	var hist latencyHist
	for _, r := range recvs {
		got += r.got[phaseMeasure].Load()
		for b, c := range r.hist {
			hist[b] += c
		}
	}
	res.sent = sentMeasure.Load()
	if res.sent > got {
		res.lost = res.sent - got
	}
	cpuSeconds := float64(t1-t0) / 100
	cores := cpuSeconds / elapsed.Seconds()
	res.cpuPercent = 100 * cores / float64(runtime.NumCPU())
	res.coresPer1000 = cores / float64(n) * 1000
	res.p50, res.p99 = hist.quantile(0.50), hist.quantile(0.99)
	return res, nil
}

// capacitySpread reports whether the senders spread the frames over the
// period (SECURECALL_CAPACITY_SEND=spread) or send all at its start (the
// default, as every figure in BENCHMARKS.md before 2026-12-02).
func capacitySpread() bool { return os.Getenv("SECURECALL_CAPACITY_SEND") == "spread" }

// capacityRun is one stack at one N.
type capacityRun struct {
	stack string
	pairs int
}

// capacityPlan reads SECURECALL_CAPACITY_PAIRS (default "100,200,400")
// into rounds of runs, run in order. A plain list, "300,500", runs every
// stack at each N in turn. Per-stack lists, "pion:225,250;securecall-push:
// 900,1000", run only the stacks named, each on its own grid (near its own
// limit, so that no time goes on a stack far past it), interleaved: round
// i runs each stack's i-th N, so that a machine whose speed drifts during
// the run moves every stack's figures alike. known lists the stack names.
func capacityPlan(s string, known []string) ([][]capacityRun, error) {
	if s == "" {
		s = "100,200,400"
	}
	bad := func(f string) error { return fmt.Errorf("SECURECALL_CAPACITY_PAIRS: bad %q", f) }
	list := func(f string) ([]int, error) {
		var ns []int
		for _, v := range strings.Split(f, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 {
				return nil, bad(v)
			}
			ns = append(ns, n)
		}
		return ns, nil
	}
	var rounds [][]capacityRun
	add := func(i int, r capacityRun) {
		for len(rounds) <= i {
			rounds = append(rounds, nil)
		}
		rounds[i] = append(rounds[i], r)
	}
	if !strings.Contains(s, ":") {
		ns, err := list(s)
		if err != nil {
			return nil, err
		}
		for i, n := range ns {
			for _, st := range known {
				add(i, capacityRun{st, n})
			}
		}
		return rounds, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		name, f, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !slices.Contains(known, name) || seen[name] {
			return nil, bad(part)
		}
		seen[name] = true
		ns, err := list(f)
		if err != nil {
			return nil, err
		}
		for i, n := range ns {
			add(i, capacityRun{name, n})
		}
	}
	return rounds, nil
}

// BenchmarkCapacity runs the stacks at the N of SECURECALL_CAPACITY_PAIRS
// (capacityPlan: every stack at each N, or each stack on its own grid,
// interleaved), in one run, and reports per stack and N: loss in the
// window, CPU (percent of all cores, from /proc/self/stat), cores per
// 1,000 pairs, heap and goroutines per pair (the harness's reader per
// endpoint and 4 senders not counted), p50 and p99 one-way latency, sends
// more than a frame period late or skipped, the scheduler's p99, the
// process's allocations per frame and GC cycles, and the host's steal
// time. It then logs, per stack, the largest N with 0 loss, no skipped
// send and under 90% CPU. Run it with -benchtime 1x: each N is one run.
func BenchmarkCapacity(b *testing.B) {
	var names []string
	for _, st := range capacityStacks() {
		names = append(names, st.name)
	}
	rounds, err := capacityPlan(os.Getenv("SECURECALL_CAPACITY_PAIRS"), names)
	if err != nil {
		b.Fatal(err)
	}
	window := 5 * time.Second
	if s := os.Getenv("SECURECALL_CAPACITY_WINDOW"); s != "" {
		if window, err = time.ParseDuration(s); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	best := map[string]int{}
	tried := map[string][]int{}
	var results []capacityResult
	for _, round := range rounds {
		stacks := capacityStacks() // fresh grids for each round
		for _, run := range round {
			st, n := stacks[slices.Index(names, run.stack)], run.pairs
			b.Run(fmt.Sprintf("stack=%s/pairs=%d", st.name, n), func(b *testing.B) {
				tried[st.name] = append(tried[st.name], n)
				for range b.N {
					r, err := runCapacity(ctx, st, n, window)
					if err != nil {
						b.Fatalf("%s at %d pairs: %v", st.name, n, err)
					}
					results = append(results, r)
					b.ReportMetric(float64(r.lost), "lost")
					b.ReportMetric(float64(r.sent), "sent")
					b.ReportMetric(r.cpuPercent, "cpu%")
					b.ReportMetric(r.coresPer1000, "cores/1000pairs")
					b.ReportMetric(r.heapPerPair, "heapB/pair")
					b.ReportMetric(r.goroutinesPair, "goroutines/pair")
					b.ReportMetric(float64(r.p50)/1e6, "p50-ms")
					b.ReportMetric(float64(r.p99)/1e6, "p99-ms")
					b.ReportMetric(float64(r.lateSends), "late-sends")
					b.ReportMetric(float64(r.skipped), "skipped-sends")
					b.ReportMetric(float64(r.schedP99)/1e6, "sched-p99-ms")
					b.ReportMetric(r.allocsPerFrame, "allocs/frame")
					b.ReportMetric(float64(r.gcCycles), "gc-cycles")
					b.ReportMetric(r.stealPercent, "steal%")
					if r.straceCalls >= 0 {
						b.ReportMetric(r.straceCalls, "syscalls/frame")
						b.Logf("system calls over the window:\n%s", r.straceTop)
					}
					if r.syscallsPerFrame >= 0 {
						b.ReportMetric(r.syscallsPerFrame, "socket-syscalls/datagram")
					}
					b.Logf("%s pairs=%d: lost %d of %d, cpu %.1f%%, %.3f cores/1000 pairs, %.0f B and %.2f goroutines per pair, p50 %v p99 %v, %d late and %d skipped sends, scheduling p99 %v, %.2f allocations per frame and %d GC cycles in the window, host steal %.1f%%, setup %v (%d retried), load average %s",
						r.stack, r.pairs, r.lost, r.sent, r.cpuPercent, r.coresPer1000, r.heapPerPair, r.goroutinesPair, r.p50, r.p99, r.lateSends, r.skipped, r.schedP99.Round(time.Microsecond), r.allocsPerFrame, r.gcCycles, r.stealPercent, r.setup.Round(time.Millisecond), r.setupFailures, r.load1)
					if r.lost == 0 && r.skipped == 0 && r.cpuPercent < 90 && n > best[r.stack] {
						best[r.stack] = n
					}
				}
			})
		}
	}
	for _, name := range names {
		if len(tried[name]) > 0 {
			b.Logf("largest N with 0 loss under 90%% CPU: %s %d (of the N tried: %v)", name, best[name], tried[name])
		}
	}
}

// syscallCounter counts every system call of this process (all threads)
// over the window: perf (SECURECALL_CAPACITY_PERF=1: counted in the
// kernel at tracepoints, nearly free, so the run is undisturbed) or
// strace (SECURECALL_CAPACITY_STRACE=1: it stops every system call, so
// the process batches more under it and its figures are indications).
type syscallCounter interface {
	// stop ends the count and returns the total.
	stop() (uint64, error)
	// top returns a summary of the busiest system calls.
	top(n int) string
}

func syscallCounterFromEnv() func() (syscallCounter, error) {
	switch {
	case os.Getenv("SECURECALL_CAPACITY_PERF") == "1":
		return startPerf
	case os.Getenv("SECURECALL_CAPACITY_STRACE") == "1":
		return startStrace
	}
	return nil
}

// perfEvents are the tracepoints perf counts: every system call, then
// the ones this benchmark cares about.
var perfEvents = []string{
	"raw_syscalls:sys_enter",
	"syscalls:sys_enter_sendmmsg", "syscalls:sys_enter_recvmmsg",
	"syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom",
	"syscalls:sys_enter_sendmsg", "syscalls:sys_enter_recvmsg",
	"syscalls:sys_enter_futex", "syscalls:sys_enter_nanosleep",
	"syscalls:sys_enter_write", "syscalls:sys_enter_read",
	"syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_sched_yield",
}

// counterTool is a counting tool attached to this process: its command
// and everything it prints.
type counterTool struct {
	cmd *exec.Cmd
	out strings.Builder
}

// attachCounter starts tool with args followed by -p <this process>, and
// gives it attach to reach every thread. need says what the environment
// variable asks for, for the error when the tool is missing.
func attachCounter(need, tool string, attach time.Duration, args ...string) (*counterTool, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("%s needs %s: %w", need, tool, err)
	}
	t := &counterTool{}
	t.cmd = exec.Command(path, append(args, "-p", strconv.Itoa(os.Getpid()))...)
	t.cmd.Stderr = &t.out
	t.cmd.Stdout = &t.out
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	time.Sleep(attach)
	return t, nil
}

// detach interrupts the tool and waits for its summary.
func (t *counterTool) detach() error {
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- t.cmd.Wait() }()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not detach", t.cmd.Path)
	}
}

type perfCount struct{ *counterTool }

func startPerf() (syscallCounter, error) {
	t, err := attachCounter("SECURECALL_CAPACITY_PERF=1", "perf", 200*time.Millisecond,
		"stat", "-x", ",", "-e", strings.Join(perfEvents, ","))
	if err != nil {
		return nil, fmt.Errorf("%w (Debian: linux-perf)", err)
	}
	return perfCount{t}, nil
}

// counts parses perf's CSV lines: count,unit,event,...
func (t perfCount) counts() map[string]uint64 {
	m := make(map[string]uint64)
	for _, line := range strings.Split(t.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			m[f[2]] = n
		}
	}
	return m
}

func (t perfCount) top(int) string {
	m := t.counts()
	var b strings.Builder
	// One line: a benchmark's log is cut after a few lines.
	for _, e := range perfEvents {
		if n := m[e]; n > 0 {
			fmt.Fprintf(&b, "%s %d, ", strings.TrimPrefix(strings.TrimPrefix(e, "syscalls:sys_enter_"), "raw_syscalls:sys_enter"), n)
		}
	}
	return "perf: " + strings.TrimSuffix(strings.Replace(b.String(), " ", "all ", 1), ", ")
}

func (t perfCount) stop() (uint64, error) {
	if err := t.detach(); err != nil {
		return 0, err
	}
	n, ok := t.counts()[perfEvents[0]]
	if !ok {
		return 0, fmt.Errorf("no count in perf's output: %q", lastLines(t.out.String(), 5))
	}
	return n, nil
}

// straceCount counts every system call of this process (all threads)
// with strace -c while it runs. strace slows each system call, so the
// process batches more under it than without: the count is an
// indication, and the CPU figures of a traced run are not comparable.
type straceCount struct{ *counterTool }

// SECURECALL_CAPACITY_STRACE=1 traces the window of every row.
func startStrace() (syscallCounter, error) {
	t, err := attachCounter("SECURECALL_CAPACITY_STRACE=1", "strace", 500*time.Millisecond, "-c", "-f")
	if err != nil {
		return nil, err
	}
	return straceCount{t}, nil
}

// top returns the header and the busiest system calls of the summary.
func (t straceCount) top(n int) string {
	lines := strings.Split(t.out.String(), "\n")
	for i, l := range lines {
		if strings.Contains(l, "% time") {
			return strings.Join(lines[i:min(len(lines), i+2+n)], "\n")
		}
	}
	return ""
}

// stop detaches strace and returns the total number of calls it counted.
func (t straceCount) stop() (uint64, error) {
	if err := t.detach(); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(t.out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[len(f)-1] == "total" {
			return strconv.ParseUint(f[3], 10, 64)
		}
	}
	return 0, fmt.Errorf("no total in strace's summary: %q", lastLines(t.out.String(), 5))
}
