package ice

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	pice "github.com/pion/ice/v3"

	"github.com/securecall/securecall/internal/pionlog"
)

// UDPMux is one UDP socket shared by many Transports, for a process that
// carries many calls: their host candidates all use its address, and
// packets are told apart by ICE username and remote address (pion's UDP
// mux). It saves a socket per call, not a goroutine: pion's mux adds a
// reader of its own and every packet passes one more hop, and two
// Transports on one UDPMux cannot call each other (it routes by remote
// address). Server-reflexive and relay candidates still use sockets of
// their own. [Endpoint] is the socket for many calls.
type UDPMux struct {
	mux    *pice.UDPMuxDefault
	addr   netip.AddrPort
	closed atomic.Bool
}

// ListenUDPMux opens the shared socket on addr, which must name a
// specific IP address (port 0 picks a free port). logger receives pion's
// diagnostics; nil is silent.
func ListenUDPMux(addr netip.AddrPort, logger *slog.Logger) (*UDPMux, error) {
	if !addr.Addr().IsValid() || addr.Addr().IsUnspecified() {
		return nil, fmt.Errorf("ice: UDP mux address %v: needs a specific IP address", addr)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("ice: UDP mux: %w", err)
	}
	lf := &pionlog.Factory{Log: logger, Prefix: "ice: "}
	// The shared socket is guarded like every other; round trips are
	// measured per Transport, on the connections GetConn hands out.
	guard := &guardNet{rtt: &rttMeter{}, relays: &relayIndex{}, dropped: func() {
		logger.Debug("ice: the guard dropped a datagram pion must not parse")
	}}
	m := &UDPMux{
		mux: pice.NewUDPMuxDefault(pice.UDPMuxParams{
			Logger:  lf.NewLogger("udpmux"),
			UDPConn: &guardPacketConn{PacketConn: conn, n: guard},
		}),
		addr: conn.LocalAddr().(*net.UDPAddr).AddrPort(),
	}
	return m, nil
}

// Addr returns the shared socket's address.
func (m *UDPMux) Addr() netip.AddrPort { return m.addr }

// Close closes the shared socket. Transports using it lose their host
// candidates; close them first. A second call returns an error wrapping
// net.ErrClosed.
func (m *UDPMux) Close() error {
	if m.closed.Swap(true) {
		return fmt.Errorf("ice: close UDP mux: %w", net.ErrClosed)
	}
	if err := m.mux.Close(); err != nil {
		return fmt.Errorf("ice: close UDP mux: %w", err)
	}
	return nil
}

// transportMux is one Transport's view of a UDPMux: it applies the
// Transport's IPFilter and wraps each connection in the Transport's guard
// and round-trip meter. Closing it leaves the shared socket open.
type transportMux struct {
	m        *UDPMux
	n        *guardNet
	ipFilter func(netip.Addr) bool
	site     *siteGuard // DirectOnly: drops off-site traffic; nil otherwise
}

func (t *transportMux) Close() error { return nil }

func (t *transportMux) GetConn(ufrag string, addr net.Addr) (net.PacketConn, error) {
	if t.m.closed.Load() {
		return nil, errors.New("ice: UDP mux is closed")
	}
	c, err := t.m.mux.GetConn(ufrag, addr)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn = &guardPacketConn{PacketConn: c, n: t.n, txids: &txidSet{}}
	if t.site != nil {
		pc = &sitePacketConn{PacketConn: pc, g: t.site}
	}
	return pc, nil
}

func (t *transportMux) RemoveConnByUfrag(ufrag string) { t.m.mux.RemoveConnByUfrag(ufrag) }

func (t *transportMux) GetListenAddresses() []net.Addr {
	a := t.m.addr.Addr()
	if t.ipFilter != nil && !t.ipFilter(a) || t.ipFilter == nil && a.IsLoopback() {
		return nil
	}
	return []net.Addr{net.UDPAddrFromAddrPort(t.m.addr)}
}
