package securecall_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/media"
)

// A call whose media keys come from the customer's KMS (hybrid keying:
// DTLS-SRTP and the KMS call key together), both ends in one process. This
// is the README's "A call in code"; TestREADMECallInCode keeps the two
// the same. In an application each device runs one side, and the offer and
// answer cross the application's own signaling.
func Example_kms() {
	ctx := context.Background()
	srv := startExampleKMS("alice", "bob") // the reference KMS, in-process
	defer srv.Close()
	iceConfig := ice.Config{ // loopback only; an application lists its STUN/TURN servers
		IPFilter: func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks: []ice.Network{ice.UDP4},
	}

	kc, err := kms.NewClient(kms.Config{URL: srv.URL, Certificate: srv.Device("alice"), RootCAs: srv.RootCAs, KMSKeys: srv.KMSKeys})
	if err != nil {
		log.Fatal(err)
	}
	defer kc.Close()
	if err := kc.Register(ctx); err != nil { // once per device: the KMS learns its key
		log.Fatal(err)
	}
	uri, err := kc.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}, RotateEvery: time.Minute})
	if err != nil {
		log.Fatal(err)
	}

	call, err := securecall.New(securecall.Config{
		ICE:       iceConfig,
		KeySource: kc,  // hybrid keying: DTLS-SRTP and the KMS key together
		KeyURI:    uri, // the offer carries this URI, never a key
	})
	if err != nil {
		log.Fatal(err)
	}
	defer call.Close()

	// The callee: its own device, its own client, its own Call.
	bc, err := kms.NewClient(kms.Config{URL: srv.URL, Certificate: srv.Device("bob"), RootCAs: srv.RootCAs, KMSKeys: srv.KMSKeys})
	if err != nil {
		log.Fatal(err)
	}
	defer bc.Close()
	if err := bc.Register(ctx); err != nil {
		log.Fatal(err)
	}
	callee, err := securecall.New(securecall.Config{ICE: iceConfig, KeySource: bc})
	if err != nil {
		log.Fatal(err)
	}
	defer callee.Close()

	offer, err := call.Offer(ctx) // send over your signaling
	if err != nil {
		log.Fatal(err)
	}
	answer, err := callee.Answer(ctx, offer) // fetches the key named in the offer
	if err != nil {
		log.Fatal(err)
	}
	if err := call.SetAnswer(ctx, answer); err != nil {
		log.Fatal(err)
	}
	if err := call.Connect(ctx); err != nil { // ICE, DTLS and keys ready
		log.Fatal(err)
	}
	if err := callee.Connect(ctx); err != nil {
		log.Fatal(err)
	}

	frame := make([]byte, 160)
	if err := call.WriteRTP(media.RTPHeader{PayloadType: call.Codec().PayloadType, SSRC: call.SSRC()}, frame); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	_, n, err := callee.ReadRTP(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("keying:", call.Keying(), callee.Keying())
	fmt.Println("received:", n, "bytes; the caller sends under key version", call.Stats().SendKeyVersion)
	// Output:
	// keying: hybrid hybrid
	// received: 160 bytes; the caller sends under key version 1
}

// exampleKMS is the in-process reference KMS the Examples run against,
// with a development CA and a certificate per device. It is the only place
// the Examples touch the server's package.
type exampleKMS struct {
	URL     string
	RootCAs *x509.CertPool
	// KMSKeys are the KMS's signing keys, which every device pins.
	KMSKeys []crypto.PublicKey
	env     *devkms.Env
}

func startExampleKMS(devices ...string) *exampleKMS {
	dir, err := os.MkdirTemp("", "securecall-example-kms-")
	if err != nil {
		log.Fatal(err)
	}
	env, err := devkms.Start(context.Background(), dir, devices...)
	if err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	return &exampleKMS{URL: env.URL, RootCAs: env.RootCAs(), KMSKeys: env.Server.SigningKeys(), env: env}
}

// Device returns the certificate the development CA issued to a device.
func (k *exampleKMS) Device(id string) tls.Certificate {
	cert, err := devkms.DeviceCertificate(k.env.CA, k.env.Dir, id)
	if err != nil {
		log.Fatal(err)
	}
	return cert
}

func (k *exampleKMS) Close() {
	k.env.Close()
	os.RemoveAll(k.env.Dir)
}

// TestREADMECallInCode keeps README.md's "A call in code" runnable: every
// line of its Go block must appear, in order, in Example_kms.
func TestREADMECallInCode(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_kms_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## A call in code\n")
	if !ok {
		t.Fatal(`README.md has no "A call in code" section`)
	}
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal(`"A call in code" has no Go block`)
	}
	block, _, _ = strings.Cut(block, "```")
	_, body, ok := strings.Cut(string(src), "func Example_kms() {\n")
	if !ok {
		t.Fatal("example_kms_test.go has no Example_kms")
	}
	body, _, _ = strings.Cut(body, "\n}\n")
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	at := 0
	for _, want := range strings.Split(block, "\n") {
		want = strings.TrimSpace(want)
		if want == "" {
			continue
		}
		found := false
		for ; at < len(lines); at++ {
			if lines[at] == want {
				found, at = true, at+1
				break
			}
		}
		if !found {
			t.Fatalf("README line %q is not in Example_kms (in this order)", want)
		}
	}
}
