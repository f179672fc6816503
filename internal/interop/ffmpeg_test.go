package interop

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/audio"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// The SDES tests carry this much G.711 audio, in 20 ms packets.
const (
	sdesSeconds = 2
	sdesPackets = sdesSeconds * audio.SampleRate / audio.FrameSamples
)

// sdesKey returns a fresh random SRTP master key and salt (30 bytes for
// AES_CM_128_HMAC_SHA1_80) and its base64 form as ffmpeg and a=crypto take it.
func sdesKey(t testing.TB) ([]byte, string) {
	t.Helper()
	k := make([]byte, 30)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k, base64.StdEncoding.EncodeToString(k)
}

// TestInteropFFmpegSendsSRTP has ffmpeg encrypt a 1 kHz tone with
// -srtp_out_suite AES_CM_128_HMAC_SHA1_80 and a static key, and the media
// package, in sdes keying over a UDP socket, decrypt every packet of it.
func TestInteropFFmpegSendsSRTP(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg", "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	key, key64 := sdesKey(t)
	// ffmpeg's ports are held until it starts: the sockets below must
	// not be given one of them.
	ffmpegPort, releaseRTP := holdUDPPort(t)
	ffmpegRTCPPort, releaseRTCP := holdUDPPort(t)
	// The socket is connected to ffmpeg's fixed source port, so that the
	// session sees only ffmpeg's packets, as it would behind ICE.
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ffmpegPort})
	if err != nil {
		t.Fatal(err)
	}
	// ffmpeg sends RTCP to a port of its own choosing; give it a sink.
	rtcpSink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rtcpSink.Close()

	s, err := media.NewSession(ctx, conn, media.Config{
		Keying: sdp.KeyingSDES,
		SDES: media.SDES{
			Profile:   media.ProfileAES128CMHMACSHA1_80,
			LocalKey:  randomKey(t),
			RemoteKey: key,
		},
	})
	if err != nil {
		t.Fatalf("media.NewSession: %v", err)
	}
	defer s.Close()

	type packet struct {
		h       media.RTPHeader
		payload []byte
	}
	packets := make(chan packet, 4*sdesPackets)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			h, n, err := s.ReadRTP(buf)
			if err != nil {
				readErr <- err
				return
			}
			packets <- packet{h, append([]byte(nil), buf[:n]...)}
		}
	}()

	dst := fmt.Sprintf("srtp://127.0.0.1:%d?localrtpport=%d&localrtcpport=%d&rtcpport=%d",
		conn.LocalAddr().(*net.UDPAddr).Port, ffmpegPort, ffmpegRTCPPort, rtcpSink.LocalAddr().(*net.UDPAddr).Port)
	releaseRTP()
	releaseRTCP()
	p := startProcess(t, ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning",
		"-re", "-f", "lavfi",
		"-i", fmt.Sprintf("sine=frequency=1000:sample_rate=%d:duration=%d:samples_per_frame=%d", audio.SampleRate, sdesSeconds, audio.FrameSamples),
		"-ac", "1", "-acodec", "pcm_mulaw", "-f", "rtp",
		"-srtp_out_suite", "AES_CM_128_HMAC_SHA1_80", "-srtp_out_params", key64, dst)
	if err := p.wait(ctx); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}

	// ffmpeg has sent everything; the packets are on loopback already.
	var got []packet
	deadline := time.After(5 * time.Second)
	for len(got) < sdesPackets {
		select {
		case pk := <-packets:
			got = append(got, pk)
		case err := <-readErr:
			t.Fatalf("ReadRTP after %d packets: %v", len(got), err)
		case <-deadline:
			t.Fatalf("received %d of the %d packets ffmpeg sent; stats %+v", len(got), sdesPackets, s.Stats())
		}
	}

	var samples []int16
	for i, pk := range got {
		if pk.h.PayloadType != 0 {
			t.Fatalf("packet %d: payload type %d, want 0 (PCMU)", i, pk.h.PayloadType)
		}
		if i > 0 && pk.h.SequenceNumber != got[i-1].h.SequenceNumber+1 {
			t.Fatalf("packet %d: sequence %d after %d: a packet is missing", i, pk.h.SequenceNumber, got[i-1].h.SequenceNumber)
		}
		for _, u := range pk.payload {
			samples = append(samples, audio.DecodeULaw(u))
		}
	}
	if want := sdesSeconds * audio.SampleRate; len(samples) != want {
		t.Fatalf("decrypted %d samples, want %d", len(samples), want)
	}
	if level := audio.ToneLevel(samples, 1000); level < 0.9 {
		t.Fatalf("1 kHz tone level %.3f in the decrypted audio, want >= 0.9", level)
	}
	st := s.Stats()
	if st.AuthFailures != 0 || st.ReplaysDropped != 0 {
		t.Fatalf("stats %+v: authentication failures or replays", st)
	}
	t.Logf("ffmpeg -> media: %d SRTP packets, %d samples decrypted, tone level %.3f",
		len(got), len(samples), audio.ToneLevel(samples, 1000))
}

// TestInteropFFmpegReceivesSRTP has the media package, in sdes keying over
// a UDP socket, send a 440 Hz µ-law tone to ffmpeg, which decrypts it with
// the key from an a=crypto line and decodes it to a WAV file: the file
// holds exactly the samples sent, and the tone.
func TestInteropFFmpegReceivesSRTP(t *testing.T) {
	ffmpeg := needTool(t, "ffmpeg", "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	key, key64 := sdesKey(t)
	dir := t.TempDir()
	port := freePort(t, "udp")
	sdpText := "v=0\r\n" +
		"o=- 0 0 IN IP4 127.0.0.1\r\n" +
		"s=securecall interop\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key64 + "\r\n"
	sdpFile := filepath.Join(dir, "recv.sdp")
	if err := os.WriteFile(sdpFile, []byte(sdpText), 0o600); err != nil {
		t.Fatal(err)
	}
	wav := filepath.Join(dir, "out.wav")
	// listen_timeout ends ffmpeg's input a second after the last packet,
	// so that it closes the WAV file by itself.
	p := startProcess(t, ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "warning",
		"-protocol_whitelist", "file,udp,rtp,srtp", "-listen_timeout", "1",
		"-i", sdpFile, "-c:a", "pcm_s16le", "-y", wav)
	if err := waitFor(ctx, "ffmpeg to bind its RTP port", func() bool { return udpBound(port) }); err != nil {
		t.Fatal(err)
	}

	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	s, err := media.NewSession(ctx, conn, media.Config{
		Keying: sdp.KeyingSDES,
		SDES: media.SDES{
			Profile:   media.ProfileAES128CMHMACSHA1_80,
			LocalKey:  key,
			RemoteKey: randomKey(t),
		},
	})
	if err != nil {
		t.Fatalf("media.NewSession: %v", err)
	}
	defer s.Close()

	tone := audio.Tone{Frequency: 440, Amplitude: 0.5}
	frame := make([]byte, audio.FrameSamples)
	h := media.RTPHeader{PayloadType: 0, SequenceNumber: 4000, Timestamp: 160000, SSRC: 0x5ec0ca11}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < sdesPackets; i++ {
		<-tick.C
		h.Marker = i == 0
		if err := s.WriteRTP(h, tone.NextFrame(frame)); err != nil {
			t.Fatalf("WriteRTP %d: %v", i, err)
		}
		h.SequenceNumber++
		h.Timestamp += audio.FrameSamples
	}

	// ffmpeg ends by itself once listen_timeout passes without a packet,
	// and exits 0 after closing the file.
	if err := p.wait(ctx); err != nil {
		t.Fatalf("ffmpeg: %v", err)
	}
	data, err := os.ReadFile(wav)
	if err != nil {
		t.Fatal(err)
	}
	samples, err := parseWAV(data)
	if err != nil {
		t.Fatalf("ffmpeg's WAV: %v", err)
	}
	sent := sdesPackets * audio.FrameSamples
	if len(samples) != sent {
		t.Fatalf("ffmpeg decoded %d samples (%v), sent %d (%v)", len(samples),
			time.Duration(len(samples))*time.Second/audio.SampleRate, sent, time.Duration(sent)*time.Second/audio.SampleRate)
	}
	if level := audio.ToneLevel(samples, 440); level < 0.9 {
		t.Fatalf("440 Hz tone level %.3f in ffmpeg's output, want >= 0.9", level)
	}
	t.Logf("media -> ffmpeg: %d SRTP packets sent, WAV of %v, tone level %.3f", sdesPackets,
		time.Duration(len(samples))*time.Second/audio.SampleRate, audio.ToneLevel(samples, 440))
}

func randomKey(t testing.TB) []byte {
	k, _ := sdesKey(t)
	return k
}

// parseWAV returns the samples of a 16-bit mono PCM WAV file at
// audio.SampleRate, walking its RIFF chunks: ffmpeg writes a LIST chunk
// before the data.
func parseWAV(b []byte) ([]int16, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return nil, errors.New("not a RIFF WAVE file")
	}
	var haveFormat bool
	for b = b[12:]; len(b) >= 8; {
		id, size := string(b[0:4]), int(binary.LittleEndian.Uint32(b[4:8]))
		b = b[8:]
		if size > len(b) {
			return nil, fmt.Errorf("chunk %q of %d bytes overruns the file", id, size)
		}
		body := b[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return nil, errors.New("short fmt chunk")
			}
			format, channels := binary.LittleEndian.Uint16(body[0:]), binary.LittleEndian.Uint16(body[2:])
			rate, bits := binary.LittleEndian.Uint32(body[4:]), binary.LittleEndian.Uint16(body[14:])
			if format != 1 || channels != 1 || rate != audio.SampleRate || bits != 16 {
				return nil, fmt.Errorf("format %d, %d channels, %d Hz, %d bits; want PCM, mono, %d Hz, 16 bits",
					format, channels, rate, bits, audio.SampleRate)
			}
			haveFormat = true
		case "data":
			if !haveFormat {
				return nil, errors.New("data chunk before fmt chunk")
			}
			samples := make([]int16, size/2)
			for i := range samples {
				samples[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return samples, nil
		}
		if size += size % 2; size > len(b) {
			break
		}
		b = b[size:]
	}
	return nil, errors.New("no data chunk")
}
