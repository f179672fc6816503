package securecall_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
)

// TestOfferAgainAfterGatherCut: an Offer whose ctx ends while ICE still
// gathers fails and leaves the call able to offer again: the next Offer
// gathers afresh and returns an offer. Before, the first Offer counted as
// not having gathered, so the next one asked the same ICE agent to gather
// a second time, which it refuses.
func TestOfferAgainAfterGatherCut(t *testing.T) {
	// A STUN server that never answers keeps gathering running for the
	// STUN gather timeout.
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	cfg := securecall.Config{ICE: loopbackICE()}
	cfg.ICE.Servers = []ice.Server{{URL: "stun:" + silent.LocalAddr().String()}}
	call, err := securecall.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := call.Offer(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Offer with a ctx that ends while gathering: %v, want context.DeadlineExceeded", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if _, err := call.Offer(ctx); err != nil {
		t.Fatalf("Offer after one cut short while gathering: %v", err)
	}
}
