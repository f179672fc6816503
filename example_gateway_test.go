package securecall_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"sync"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
)

// A gateway's calls on one shared socket (an ice.Endpoint) with push
// delivery: each call's RTP is decrypted and handed to OnRTP on the
// Endpoint's one reader, with no goroutine per call, and each tick's
// frames to all calls leave in one Endpoint.Batch, 32 to a system call.
// Here the phones are calls in the same process with sockets of their own.
func Example_gateway() {
	ctx := context.Background()
	loopback := ice.Config{
		IPFilter: func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks: []ice.Network{ice.UDP4},
	}
	ep, err := ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ep.Close()

	var mu sync.Mutex
	var received sync.WaitGroup
	frames := map[int]int{} // frames received per gateway call
	var gateway, phones []*securecall.Call
	for i := range 3 {
		cfg := securecall.Config{ICE: loopback}
		cfg.ICE.Endpoint = ep
		cfg.Media.OnRTP = func(h media.RTPHeader, payload []byte) {
			// On the Endpoint's reader: quick, no blocking. payload is
			// valid until return.
			mu.Lock()
			frames[i]++
			mu.Unlock()
			received.Done()
		}
		gw, err := securecall.New(cfg)
		if err != nil {
			log.Fatal(err)
		}
		defer gw.Close()
		phone, err := securecall.New(securecall.Config{ICE: loopback})
		if err != nil {
			log.Fatal(err)
		}
		defer phone.Close()
		offer, err := phone.Offer(ctx)
		if err != nil {
			log.Fatal(err)
		}
		answer, err := gw.Answer(ctx, offer)
		if err != nil {
			log.Fatal(err)
		}
		if err := phone.SetAnswer(ctx, answer); err != nil {
			log.Fatal(err)
		}
		if err := phone.Connect(ctx); err != nil {
			log.Fatal(err)
		}
		if err := gw.Connect(ctx); err != nil {
			log.Fatal(err)
		}
		gateway, phones = append(gateway, gw), append(phones, phone)

		received.Add(1)
		frame := make([]byte, 160)
		if err := phone.WriteRTP(media.RTPHeader{PayloadType: phone.Codec().PayloadType, SSRC: phone.SSRC()}, frame); err != nil {
			log.Fatal(err)
		}
	}
	received.Wait()

	// One tick: a frame to every call, in one batch.
	frame := make([]byte, 160)
	ep.Batch(func() {
		for _, gw := range gateway {
			h := media.RTPHeader{PayloadType: gw.Codec().PayloadType, SSRC: gw.SSRC()}
			if err := gw.WriteRTP(h, frame); err != nil {
				log.Fatal(err)
			}
		}
	})
	buf := make([]byte, 1500)
	for _, phone := range phones {
		if _, _, err := phone.ReadRTP(buf); err != nil {
			log.Fatal(err)
		}
	}
	_, _, err = gateway[0].ReadRTP(buf)
	mu.Lock()
	fmt.Println("frames per gateway call:", frames[0], frames[1], frames[2])
	mu.Unlock()
	fmt.Println("gateway ReadRTP is handled by OnRTP:", errors.Is(err, media.ErrRTPHandled))
	fmt.Println("calls on the endpoint:", ep.Stats().Transports)
	// Output:
	// frames per gateway call: 1 1 1
	// gateway ReadRTP is handled by OnRTP: true
	// calls on the endpoint: 3
}
