package securecall_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/sdp"
)

// Calls on a shared ice.Endpoint, set through Config.ICE.Endpoint: both
// ends of a dtls call on one socket, and a call between an Endpoint and a
// Call with its own socket; closing the Endpoint ends its calls' media
// with ice.ErrEndpointClosed.
func TestCallSharedEndpoint(t *testing.T) {
	ep, shared := sharedEndpoint(t)
	for _, tc := range endpointCases(shared) {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pair(t, securecall.Config{ICE: tc.ca, Keying: sdp.KeyingDTLS}, securecall.Config{ICE: tc.cb, Keying: sdp.KeyingDTLS})
			sendRecv(t, a, b, 50)
			sendRecv(t, b, a, 50)
			rtcpBothWays(t, a, b)
			if p := a.Path(); p.Local.Address != ep.Addr() {
				t.Errorf("path %+v, want the endpoint's address %v", p, ep.Addr())
			}
		})
	}
	a, b := pair(t, securecall.Config{ICE: shared, Keying: sdp.KeyingDTLS}, securecall.Config{ICE: loopbackICE(), Keying: sdp.KeyingDTLS})
	sendRecv(t, a, b, 5)
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.ReadRTP(make([]byte, 1500))
	if !errors.Is(err, ice.ErrEndpointClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadRTP after the endpoint closed: %v, want ice.ErrEndpointClosed", err)
	}
	_ = b
}

// sharedEndpoint opens an ice.Endpoint on loopback, closed at the test's
// end, and returns it with an ICE config that puts calls on it.
func sharedEndpoint(t *testing.T) (*ice.Endpoint, ice.Config) {
	t.Helper()
	ep, err := ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	shared := loopbackICE()
	shared.Endpoint = ep
	return ep, shared
}

// endpointCase is a call whose ends sit where ca and cb put them.
type endpointCase struct {
	name   string
	ca, cb ice.Config
}

// endpointCases are the two ways a call uses an Endpoint: both ends on it
// (media handed over in the process), or one end on it and the other on
// a socket of its own.
func endpointCases(shared ice.Config) []endpointCase {
	return []endpointCase{
		{"both ends on the endpoint", shared, shared},
		{"endpoint and own socket", shared, loopbackICE()},
	}
}
