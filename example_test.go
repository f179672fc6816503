package securecall_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// Two calls in one process, connected over loopback in dtls keying. In an
// application the offer and answer cross the application's own signaling.
func Example() {
	ctx := context.Background()
	cfg := securecall.Config{
		ICE: ice.Config{
			IPFilter: func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
			Networks: []ice.Network{ice.UDP4},
		},
		Codecs: []sdp.Format{{PayloadType: 0, Name: "PCMU", ClockRate: 8000}},
	}
	alice, err := securecall.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	bob, err := securecall.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()

	offer, err := alice.Offer(ctx) // send to bob
	if err != nil {
		log.Fatal(err)
	}
	answer, err := bob.Answer(ctx, offer) // send back to alice
	if err != nil {
		log.Fatal(err)
	}
	if err := alice.SetAnswer(ctx, answer); err != nil {
		log.Fatal(err)
	}
	if err := alice.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	if err := bob.Connect(ctx); err != nil {
		log.Fatal(err)
	}

	frame := make([]byte, 160) // 20 ms of G.711 at 8 kHz
	h := media.RTPHeader{PayloadType: alice.Codec().PayloadType, SSRC: alice.SSRC()}
	if err := alice.WriteRTP(h, frame); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 1500)
	_, n, err := bob.ReadRTP(buf)
	if err != nil {
		log.Fatal(err)
	}
	st := bob.Stats()
	fmt.Println("keying:", bob.Keying(), st.Profile)
	fmt.Println("direct path:", st.Path.Direct())
	fmt.Println("codec:", bob.Codec().Name)
	fmt.Println("received:", n, "bytes")
	// Output:
	// keying: dtls AEAD_AES_128_GCM
	// direct path: true
	// codec: PCMU
	// received: 160 bytes
}
