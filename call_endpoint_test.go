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
	ep, err := ice.ListenEndpoint(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	shared := loopbackICE()
	shared.Endpoint = ep
	for _, tc := range []struct {
		name   string
		ca, cb ice.Config
	}{
		{"both ends on the endpoint", shared, shared},
		{"endpoint and own socket", shared, loopbackICE()},
	} {
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
	_, _, err = a.ReadRTP(make([]byte, 1500))
	if !errors.Is(err, ice.ErrEndpointClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadRTP after the endpoint closed: %v, want ice.ErrEndpointClosed", err)
	}
	_ = b
}
