package ice

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds a TCP connection and TLS handshake to a TURN server.
const dialTimeout = 5 * time.Second

// turnDialer connects to TURN servers over TCP and TLS. pion hands every
// TCP TURN connection to it (as its proxy dialer), which lets the
// Transport verify turns: servers with Config.TLSConfig, which pion alone
// cannot, and remember which server each local socket talks to.
type turnDialer struct {
	tlsConfig *tls.Config
	// tlsServers is the set of "host:port" that are turns: servers.
	tlsServers map[string]bool
	ctx        context.Context // cancelled by Close
	relays     *relayIndex
	guard      *guardNet
}

func (d *turnDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, dialTimeout)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if d.tlsServers[address] {
		cfg := d.tlsConfig
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		} else {
			cfg = cfg.Clone()
		}
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(address)
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("ice: TLS to TURN server %s: %w", address, err)
		}
		c = tc
	}
	d.relays.add("tcp", c.LocalAddr(), address)
	return newGuardStream(c, d.guard), nil
}

// relayIndex remembers which TURN server ("host:port") each local socket
// talks to, so that a selected relay candidate can be reported with its
// server's URL.
type relayIndex struct {
	mu     sync.Mutex
	byPort map[string]string // "udp:port" or "tcp:port" -> server host:port
	// resolved maps a resolved server address back to its host:port.
	resolved map[string]string
}

func (r *relayIndex) add(proto string, local net.Addr, server string) {
	port := addrPort(local)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byPort == nil {
		r.byPort = make(map[string]string)
	}
	r.byPort[proto+":"+port] = server
}

func (r *relayIndex) addResolved(resolved, hostPort string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resolved == nil {
		r.resolved = make(map[string]string)
	}
	r.resolved[resolved] = hostPort
}

// sentTo records the first destination of a UDP socket.
func (r *relayIndex) sentTo(local, dst net.Addr) {
	key := "udp:" + addrPort(local)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byPort[key]; ok {
		return
	}
	hp, ok := r.resolved[dst.String()]
	if !ok {
		return
	}
	if r.byPort == nil {
		r.byPort = make(map[string]string)
	}
	r.byPort[key] = hp
}

func (r *relayIndex) server(proto string, port int) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.byPort[fmt.Sprintf("%s:%d", proto, port)]
	return s, ok
}

func addrPort(a net.Addr) string {
	switch a := a.(type) {
	case *net.UDPAddr:
		return fmt.Sprint(a.Port)
	case *net.TCPAddr:
		return fmt.Sprint(a.Port)
	}
	_, p, _ := net.SplitHostPort(a.String())
	return p
}
