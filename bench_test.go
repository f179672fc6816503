package securecall_test

import (
	"context"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// BenchmarkCallSetup measures one call from New on both sides to the first
// packet decrypted at the far end, both ends in this process on loopback.
func BenchmarkCallSetup(b *testing.B) {
	for _, keying := range []sdp.Keying{sdp.KeyingDTLS, sdp.KeyingKMS, sdp.KeyingHybrid} {
		b.Run("keying="+string(keying), func(b *testing.B) {
			ca, cb := setupConfigs(b, keying)
			payload := make([]byte, 160)
			buf := make([]byte, 1500)
			b.ResetTimer()
			for range b.N {
				a, z := connectPair(b, ca, cb)
				h := media.RTPHeader{PayloadType: a.Codec().PayloadType, SSRC: a.SSRC()}
				if err := a.WriteRTP(h, payload); err != nil {
					b.Fatal(err)
				}
				z.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := z.ReadRTP(buf); err != nil {
					b.Fatalf("%v\nsender %+v\nreceiver %+v", err, a.Stats(), z.Stats())
				}
				b.StopTimer()
				a.Close()
				z.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCallFootprint measures the heap and goroutines each connected
// call endpoint holds, with 100 calls (200 endpoints) up at once and a
// packet decrypted each way on every call, as once audio flows. The
// figures are reported per endpoint.
//
// The shared=endpoint rows put every endpoint on one ice.Endpoint, opened
// before the count (its socket, reader and buffers serve all calls; the
// two ends of each call are handed over in the process).
func BenchmarkCallFootprint(b *testing.B) {
	for _, bc := range []struct {
		keying       sdp.Keying
		shared, push bool
	}{{sdp.KeyingDTLS, false, false}, {sdp.KeyingHybrid, false, false}, {sdp.KeyingDTLS, true, false}, {sdp.KeyingDTLS, true, true}} {
		keying := bc.keying
		name := "keying=" + string(keying)
		if bc.shared {
			name += "/shared=endpoint"
		}
		if bc.push {
			name += "/delivery=push"
		}
		b.Run(name, func(b *testing.B) {
			const calls = 100
			cfg := securecall.Config{ICE: loopbackICE(), Keying: keying}
			if bc.shared {
				ep, err := ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
				if err != nil {
					b.Fatal(err)
				}
				defer ep.Close()
				cfg.ICE.Endpoint = ep
			}
			cert, err := media.GenerateCertificate()
			if err != nil {
				b.Fatal(err)
			}
			cfg.Certificate = cert
			pushed := make(chan struct{}, 1)
			if bc.push {
				cfg.Media.OnRTP = func(media.RTPHeader, []byte) {
					select { // on the Endpoint's reader: never block it
					case pushed <- struct{}{}:
					default:
					}
				}
			}
			ca, cb := cfg, cfg
			var uris []string
			if keying != sdp.KeyingDTLS {
				env := kmsEnv(b, "alice", "bob")
				alice := kmsClient(b, env, "alice")
				for range calls {
					uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
					if err != nil {
						b.Fatal(err)
					}
					uris = append(uris, uri)
				}
				ca.KeySource = alice
				cb.KeySource = kmsClient(b, env, "bob")
			}
			payload := make([]byte, 160)
			buf := make([]byte, 1500)
			g0 := runtime.NumGoroutine()
			for range b.N {
				b.StopTimer()
				// The previous round's calls are closed, but pion ends some
				// goroutines asynchronously: wait for them, so that their
				// memory is not counted against this round or freed in it,
				settle(g0)
				// and for timers of closed calls (DTLS retransmission, ICE
				// keepalive) that still hold them.
				time.Sleep(time.Second)
				before := heapAfterGC()
				b.StartTimer()
				var all []*securecall.Call
				for i := range calls {
					if uris != nil {
						ca.KeyURI = uris[i]
					}
					a, z := connectPair(b, ca, cb)
					for _, p := range [][2]*securecall.Call{{a, z}, {z, a}} {
						h := media.RTPHeader{PayloadType: p[0].Codec().PayloadType, SSRC: p[0].SSRC()}
						if err := p[0].WriteRTP(h, payload); err != nil {
							b.Fatal(err)
						}
						if bc.push {
							select {
							case <-pushed:
							case <-time.After(5 * time.Second):
								b.Fatalf("call %d: nothing pushed (state %s, stats %+v)", i, p[1].State(), p[1].Stats())
							}
							continue
						}
						p[1].SetReadDeadline(time.Now().Add(5 * time.Second))
						if _, _, err := p[1].ReadRTP(buf); err != nil {
							b.Fatalf("call %d: %v (state %s, stats %+v)", i, err, p[1].State(), p[1].Stats())
						}
					}
					all = append(all, a, z)
				}
				b.StopTimer()
				after := heapAfterGC()
				g1 := runtime.NumGoroutine()
				if p := os.Getenv("SECURECALL_FOOTPRINT_HEAPPROFILE"); p != "" {
					// What the connected calls hold (go tool pprof -sample_index=inuse_space).
					writeHeapProfile(b, p)
				}
				b.ReportMetric(float64(after-before)/float64(len(all)), "heap-B/endpoint")
				b.ReportMetric(float64(g1-g0)/float64(len(all)), "goroutines/endpoint")
				for _, c := range all {
					c.Close()
				}
				b.StartTimer()
			}
		})
	}
}

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// heapAfterGC returns the live heap after two collections (the second
// frees what finalizers of the first released).
func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// settle waits, for at most two seconds, until no more goroutines run than
// n.
func settle(n int) {
	for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// setupConfigs returns the two ends' configs for a setup benchmark in
// keying: loopback ICE, a call key from an in-process KMS in kms and hybrid
// keying, and one DTLS certificate made once, as an application would keep
// its own.
func setupConfigs(b *testing.B, keying sdp.Keying) (ca, cb securecall.Config) {
	b.Helper()
	ca = securecall.Config{ICE: loopbackICE(), Keying: keying}
	cb = ca
	if keying != sdp.KeyingDTLS {
		env := kmsEnv(b, "alice", "bob")
		alice := kmsClient(b, env, "alice")
		uri, err := alice.CreateCall(context.Background(), kms.CallOptions{Participants: []string{"alice", "bob"}})
		if err != nil {
			b.Fatal(err)
		}
		ca.KeySource, ca.KeyURI = alice, uri
		cb.KeySource = kmsClient(b, env, "bob")
	}
	cert, err := media.GenerateCertificate()
	if err != nil {
		b.Fatal(err)
	}
	ca.Certificate, cb.Certificate = cert, cert
	return ca, cb
}
