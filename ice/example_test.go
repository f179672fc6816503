package ice_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// Two endpoints on loopback find their path and exchange a packet. In an
// application the credentials and candidates travel in the SDP.
func Example() {
	cfg := ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") },
		Networks:        []ice.Network{ice.UDP4},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	offerer, err := ice.NewTransport(cfg)
	if err != nil {
		panic(err)
	}
	defer offerer.Close()
	answerer, err := ice.NewTransport(cfg)
	if err != nil {
		panic(err)
	}
	defer answerer.Close()

	// Each side's candidates go to the other (here directly; trickled over
	// signaling in an application).
	for _, p := range []struct{ from, to *ice.Transport }{{offerer, answerer}, {answerer, offerer}} {
		err := p.from.Gather(ctx, func(c sdp.Candidate) {
			if err := p.to.AddRemoteCandidate(c); err != nil {
				panic(err)
			}
		})
		if err != nil {
			panic(err)
		}
	}
	peer := func(t *ice.Transport) ice.Peer {
		c := t.LocalCredentials()
		return ice.Peer{Ufrag: c.Ufrag, Pwd: c.Pwd}
	}

	var wg sync.WaitGroup
	var answerConn net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if answerConn, err = answerer.Connect(ctx, peer(offerer), false); err != nil {
			panic(err)
		}
	}()
	offerConn, err := offerer.Connect(ctx, peer(answerer), true) // the offerer controls
	if err != nil {
		panic(err)
	}
	wg.Wait()

	if _, err := offerConn.Write([]byte("hello")); err != nil {
		panic(err)
	}
	buf := make([]byte, 1500)
	n, err := answerConn.Read(buf)
	if err != nil {
		panic(err)
	}
	p := offerer.Path()
	fmt.Printf("received %q over %s -> %s\n", buf[:n], p.Local.Type, p.Remote.Type)
	// Output:
	// received "hello" over host -> host
}

// Credentials for a TURN server that shares a secret with its clients
// (coturn's use-auth-secret).
func ExampleRESTCredentials() {
	user, cred := ice.RESTCredentials("shared secret", "alice", time.Unix(1700000000, 0))
	fmt.Println(user, cred)
	srv := ice.Server{URL: "turn:turn.example.com:3478?transport=udp", Username: user, Credential: cred}
	fmt.Println(srv) // the credential is redacted
	// Output:
	// 1700000000:alice BK+8VNcVfo7Sv8Aw/E086nWz+2Q=
	// turn:turn.example.com:3478?transport=udp (user "1700000000:alice")
}
