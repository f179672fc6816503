package media

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // the floor of AES_CM_128_HMAC_SHA1_80 is HMAC-SHA1
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"

	"github.com/securecall/securecall/sdp"
)

// benchSessions returns a sender and a receiver with matching keys and no
// transport: the benchmarks measure the protect and unprotect paths as
// WriteRTP and ReadRTP run them (lock, key checks, header, SRTP), not the
// system calls. mki selects kms keying (4-byte MKI = version) or sdes
// keying without MKI.
func benchSessions(b testing.TB, p Profile, mki bool) (*Session, *Session) {
	b.Helper()
	if mki {
		keys := newFakeKeys(b, 1)
		var ss [2]*Session
		for i, ids := range [][2]string{{"alice", "bob"}, {"bob", "alice"}} {
			c, err := Config{Keying: sdp.KeyingKMS, Profiles: []Profile{p}, KeySource: keys, KeyURI: testURI, LocalID: ids[0], RemoteID: ids[1]}.resolve()
			if err != nil {
				b.Fatal(err)
			}
			s := newSession(c, discardConn{})
			s.profile = p
			ks, _ := keys.Keys(b.Context(), testURI)
			if err := s.initVersioned(ks); err != nil {
				b.Fatal(err)
			}
			s.rtpTrailer, s.rtcpTrailer = p.rtpTrailerLen(), p.rtcpTrailerLen()
			ss[i] = s
		}
		return ss[0], ss[1]
	}
	ka, kb := make([]byte, p.keyLen()+p.saltLen()), make([]byte, p.keyLen()+p.saltLen())
	rand.Read(ka)
	rand.Read(kb)
	var ss [2]*Session
	for i, d := range []SDES{{Profile: p, LocalKey: ka, RemoteKey: kb}, {Profile: p, LocalKey: kb, RemoteKey: ka}} {
		c, err := Config{Keying: sdp.KeyingSDES, SDES: d}.resolve()
		if err != nil {
			b.Fatal(err)
		}
		s := newSession(c, discardConn{})
		s.profile = p
		if err := s.initSDES(); err != nil {
			b.Fatal(err)
		}
		s.rtpTrailer, s.rtcpTrailer = p.rtpTrailerLen(), p.rtcpTrailerLen()
		ss[i] = s
	}
	return ss[0], ss[1]
}

var benchProfiles = []struct {
	name string
	p    Profile
}{{"GCM", ProfileAEADAES128GCM}, {"CM80", ProfileAES128CMHMACSHA1_80}}

var benchPayloads = []int{160, 1200}

func forEachBench(b *testing.B, fn func(b *testing.B, p Profile, size int, mki bool)) {
	for _, prof := range benchProfiles {
		for _, size := range benchPayloads {
			for _, mki := range []bool{true, false} {
				onOff := "off"
				if mki {
					onOff = "on"
				}
				b.Run(fmt.Sprintf("profile=%s/payload=%d/mki=%s", prof.name, size, onOff), func(b *testing.B) {
					fn(b, prof.p, size, mki)
				})
			}
		}
	}
}

func BenchmarkProtect(b *testing.B) {
	forEachBench(b, func(b *testing.B, p Profile, size int, mki bool) {
		s, _ := benchSessions(b, p, mki)
		payload := make([]byte, size)
		h := RTPHeader{PayloadType: 0, SSRC: 1}
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			// As WriteRTP does: a pooled buffer, the send lock.
			ob := getOut()
			s.sendMu.Lock()
			_, err := s.protectRTPLocked(ob[:0], &h, payload)
			s.sendMu.Unlock()
			putOut(ob)
			if err != nil {
				b.Fatal(err)
			}
			h.SequenceNumber++
			h.Timestamp += 160
		}
	})
}

func BenchmarkUnprotect(b *testing.B) {
	forEachBench(b, func(b *testing.B, p Profile, size int, mki bool) {
		s, r := benchSessions(b, p, mki)
		payload := make([]byte, size)
		h := RTPHeader{PayloadType: 0, SSRC: 1}
		// Replay protection refuses a packet twice, so the receiver gets a
		// fresh batch whenever it has used one up.
		const batch = 4096
		pkts := make([][]byte, batch)
		var ob outBuf
		fill := func() {
			for i := range pkts {
				s.sendMu.Lock()
				out, err := s.protectRTPLocked(ob[:0], &h, payload)
				s.sendMu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				pkts[i] = append(pkts[i][:0], out...)
				h.SequenceNumber++
				h.Timestamp += 160
			}
		}
		b.SetBytes(int64(size))
		loopBatches(b, batch, fill, func(i int) {
			if _, ok := r.unprotectRTP(pkts[i], pkts[i]); !ok {
				b.Fatalf("packet %d did not unprotect: %+v", i, r.Stats())
			}
		})
	})
}

// loopBatches runs each(i) for i = 0..batch-1 over and over, b.N times in
// all, calling fill before the first pass and, off the clock, before each
// further one: for paths that use a packet up (replay protection,
// decryption in place).
func loopBatches(b *testing.B, batch int, fill func(), each func(i int)) {
	fill()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == batch {
			b.StopTimer()
			fill()
			i = 0
			b.StartTimer()
		}
		each(i)
		i++
	}
}

// BenchmarkFloor is the raw cryptography each profile cannot avoid, on the
// same payloads with a 12-byte RTP header: AES-128-GCM Seal and Open with
// the header as additional data, and AES-128-CTR plus a 80-bit HMAC-SHA1
// over header, payload and rollover counter.
func BenchmarkFloor(b *testing.B) {
	key := make([]byte, 16)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range benchPayloads {
		header := make([]byte, 12)
		payload := make([]byte, size)
		nonce := make([]byte, 12)
		dst := make([]byte, 0, size+64)
		b.Run(fmt.Sprintf("profile=GCM/payload=%d/op=seal", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				binary.BigEndian.PutUint32(nonce[8:], binary.BigEndian.Uint32(nonce[8:])+1)
				dst = gcm.Seal(dst[:0], nonce, payload, header)
			}
		})
		sealed := gcm.Seal(nil, nonce, payload, header)
		b.Run(fmt.Sprintf("profile=GCM/payload=%d/op=open", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = gcm.Open(dst[:0], nonce, sealed, header); err != nil {
					b.Fatal(err)
				}
			}
		})
		// Open as BenchmarkUnprotect meets its packets: in place, each
		// packet a different one of a batch of 4096 (about 0.8 MB at 160
		// bytes, more than the L2 cache), refilled off the clock. The raw
		// floor of unprotecting a stream, where op=open is of one hot
		// packet.
		b.Run(fmt.Sprintf("profile=GCM/payload=%d/op=open-batch", size), func(b *testing.B) {
			const batch = 4096
			pkts := make([][]byte, batch)
			nonces := make([][12]byte, batch)
			fill := func() {
				for i := range pkts {
					binary.BigEndian.PutUint32(nonces[i][8:], uint32(i))
					pkts[i] = gcm.Seal(pkts[i][:0], nonces[i][:], payload, header)
				}
			}
			b.SetBytes(int64(size))
			loopBatches(b, batch, fill, func(i int) {
				if _, err := gcm.Open(pkts[i][:0], nonces[i][:], pkts[i], header); err != nil {
					b.Fatal(err)
				}
			})
		})
		mac := hmac.New(sha1.New, key)
		iv := make([]byte, 16)
		sum := make([]byte, 0, sha1.Size)
		out := make([]byte, size)
		var roc [4]byte
		b.Run(fmt.Sprintf("profile=CM80/payload=%d/op=protect", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				binary.BigEndian.PutUint32(iv[10:], binary.BigEndian.Uint32(iv[10:])+1)
				cipher.NewCTR(block, iv).XORKeyStream(out, payload)
				mac.Reset()
				mac.Write(header)
				mac.Write(out)
				mac.Write(roc[:])
				sum = mac.Sum(sum[:0])
			}
		})
		b.Run(fmt.Sprintf("profile=CM80/payload=%d/op=unprotect", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			want := append([]byte(nil), sum[:10]...)
			for b.Loop() {
				mac.Reset()
				mac.Write(header)
				mac.Write(out)
				mac.Write(roc[:])
				sum = mac.Sum(sum[:0])
				if hmac.Equal(sum[:10], want) {
					cipher.NewCTR(block, iv).XORKeyStream(payload, out)
				}
			}
		})
	}
}

// BenchmarkPionBaseline runs pion/srtp's EncryptRTP and DecryptRTP directly
// on the session's contexts (no lock, no header building, no key checks),
// to separate this package's overhead from pion's in the ratios to the
// floor.
func BenchmarkPionBaseline(b *testing.B) {
	for _, size := range benchPayloads {
		s, r := benchSessions(b, ProfileAEADAES128GCM, false)
		h := RTPHeader{SSRC: 1}
		plain := h.appendTo(nil)
		plain = append(plain, make([]byte, size)...)
		dst := make([]byte, 0, MaxPacketSize)
		b.Run(fmt.Sprintf("profile=GCM/payload=%d/op=encrypt", size), func(b *testing.B) {
			b.ReportAllocs()
			seq := uint16(0)
			for b.Loop() {
				binary.BigEndian.PutUint16(plain[2:], seq)
				seq++
				var err error
				if dst, err = s.send.EncryptRTP(dst[:0], plain, &s.wHdr); err != nil {
					b.Fatal(err)
				}
			}
		})
		const batch = 4096
		pkts := make([][]byte, batch)
		seq := uint16(0)
		fill := func() {
			for i := range pkts {
				binary.BigEndian.PutUint16(plain[2:], seq)
				seq++
				out, err := s.send.EncryptRTP(nil, plain, &s.wHdr)
				if err != nil {
					b.Fatal(err)
				}
				pkts[i] = out
			}
		}
		// A fresh sender: the encrypt benchmark above advanced its ROC state.
		s, r = benchSessions(b, ProfileAEADAES128GCM, false)
		b.Run(fmt.Sprintf("profile=GCM/payload=%d/op=decrypt", size), func(b *testing.B) {
			loopBatches(b, batch, fill, func(i int) {
				var err error
				if dst, err = r.recv.DecryptRTP(dst[:0], pkts[i], &r.rHdr); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkSessionFootprint measures the memory and goroutines a session
// in kms keying costs while it is up and idle (one pair of sessions per
// op, over an in-memory link, with a KeySource that does not watch): the
// numbers that bound how many calls fit in one process.
func BenchmarkSessionFootprint(b *testing.B) {
	keys := staticKeys{newFakeKeys(b, 1)}
	var sessions []*Session
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for b.Loop() {
		ca, cb := memPairCap(1) // about 0.5 KB each: the transport is not the session's
		a, c := pairConfigs(b, sdp.KeyingKMS, keys)
		sa, sb, errA, errB := startPair(b, ca, cb, a, c)
		if errA != nil || errB != nil {
			b.Fatal(errA, errB)
		}
		sessions = append(sessions, sa, sb)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	n := float64(len(sessions))
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heapB/session")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/session")
	for _, s := range sessions {
		s.Close()
	}
}

// staticKeys hides fakeKeys's Watch: a KeySource without KeyWatcher.
type staticKeys struct{ f *fakeKeys }

func (s staticKeys) Keys(ctx context.Context, uri string) ([]CallKey, error) {
	return s.f.Keys(ctx, uri)
}
