package securecall_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// lossyProxy stands in front of one call's host candidate: datagrams from
// anyone else go to the call, the call's go back to whoever sent last.
// Until lossUntil it drops each datagram with probability loss.
type lossyProxy struct {
	conn      *net.UDPConn
	target    *net.UDPAddr
	lossUntil time.Time
	loss      float64

	mu     sync.Mutex
	rng    *rand.Rand
	client *net.UDPAddr
	done   chan struct{}
}

func newLossyProxy(tb testing.TB, target *net.UDPAddr, loss float64, lossFor time.Duration, seed uint64) *lossyProxy {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	p := &lossyProxy{conn: c, target: target, lossUntil: time.Now().Add(lossFor), loss: loss,
		rng: rand.New(rand.NewPCG(seed, 7)), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *lossyProxy) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *lossyProxy) run() {
	defer close(p.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		drop := time.Now().Before(p.lossUntil) && p.rng.Float64() < p.loss
		to := p.target
		if sameAddr(from, p.target) {
			to = p.client
		} else {
			p.client = from
		}
		p.mu.Unlock()
		if drop || to == nil {
			continue
		}
		p.conn.WriteToUDP(buf[:n], to)
	}
}

func sameAddr(x, y *net.UDPAddr) bool {
	return x.Port == y.Port && x.IP.Equal(y.IP)
}

func (p *lossyProxy) close() {
	p.conn.Close()
	<-p.done
}

var hostCandidate = regexp.MustCompile(`(a=candidate:\S+ 1 udp \d+ )127\.0\.0\.1 (\d+)( typ host)`)

// throughProxies rewrites every loopback host candidate of desc to a lossy
// proxy in front of it, so that everything the peer sends passes a proxy.
func throughProxies(tb testing.TB, desc string, loss float64, lossFor time.Duration, seed uint64, proxies *[]*lossyProxy) string {
	tb.Helper()
	out := hostCandidate.ReplaceAllStringFunc(desc, func(line string) string {
		m := hostCandidate.FindStringSubmatch(line)
		port, _ := strconv.Atoi(m[2])
		p := newLossyProxy(tb, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, loss, lossFor, seed+uint64(len(*proxies)))
		*proxies = append(*proxies, p)
		return fmt.Sprintf("%s127.0.0.1 %d%s", m[1], p.addr().Port, m[3])
	})
	if out == desc {
		tb.Fatalf("no host candidate to put behind a proxy in:\n%s", desc)
	}
	return out
}

// BenchmarkCallSetupLossy measures call setup (New on both sides to the
// first packet decrypted at the far end) when every datagram of the first
// second is lost with probability 30%, through a proxy in front of each
// side's host candidate. It reports the p50 and p90 over the iterations.
// Run it with a fixed count, for example -benchtime=40x.
func BenchmarkCallSetupLossy(b *testing.B) {
	const (
		loss    = 0.3
		lossFor = time.Second
	)
	for _, keying := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid} {
		b.Run("keying="+string(keying), func(b *testing.B) {
			ca, cb := setupConfigs(b, keying)
			payload := make([]byte, 160)
			buf := make([]byte, 1500)
			var setups []time.Duration
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				a, z, proxies := lossyPair(b, ca, cb, loss, lossFor, uint64(i)*16)
				h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SSRC: a.SSRC()}
				z.SetReadDeadline(time.Now().Add(10 * time.Second))
				got := make(chan error, 1)
				go func() {
					_, _, err := z.ReadRTP(buf)
					got <- err
				}()
				// Media is lossy too in the first second: send until one
				// packet decrypts, every 20 ms as audio would.
				var err error
				for seq := uint16(0); ; seq++ {
					h.SequenceNumber = seq
					if werr := a.WriteRTP(h, payload); werr != nil {
						b.Fatal(werr)
					}
					select {
					case err = <-got:
					case <-time.After(20 * time.Millisecond):
						continue
					}
					break
				}
				if err != nil {
					b.Fatalf("%v\nsender %+v\nreceiver %+v", err, a.Stats(), z.Stats())
				}
				setups = append(setups, time.Since(start))
				b.StopTimer()
				a.Close()
				z.Close()
				for _, p := range proxies {
					p.close()
				}
				b.StartTimer()
			}
			slices.Sort(setups)
			b.ReportMetric(float64(setups[len(setups)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(setups[len(setups)*9/10].Microseconds())/1000, "p90-ms")
		})
	}
}

// lossyPair is connectPair with every candidate behind a lossy proxy.
func lossyPair(tb testing.TB, ca, cb securecall.Config, loss float64, lossFor time.Duration, seed uint64) (a, b *securecall.Call, proxies []*lossyProxy) {
	tb.Helper()
	carry := func(desc string, toCallee bool) string {
		s := seed
		if !toCallee {
			s = seed + 8
		}
		return throughProxies(tb, desc, loss, lossFor, s, &proxies)
	}
	closeProxies := func() {
		for _, p := range proxies {
			p.close()
		}
	}
	a, b = connectPairVia(tb, ca, cb, carry, closeProxies)
	return a, b, proxies
}
