package stunturn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/turn/v3"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/internal/pionlog"
)

// Config configures a Server. The zero value is valid.
type Config struct {
	// Address is the IP address to listen on, for UDP and TCP. If zero,
	// defaults to 127.0.0.1.
	Address netip.Addr
	// Port is the port to listen on. If zero, a free port is chosen.
	Port uint16
	// RelayAddress is the address of relayed allocations; relay sockets
	// are bound to it. If zero, defaults to Address.
	RelayAddress netip.Addr
	// Realm is the TURN realm. If empty, defaults to "securecall".
	Realm string
	// Username and Password are the static TURN credentials. If both are
	// empty, a random password is made for the user "securecall".
	Username, Password string
	// Secret, if set, makes the server accept TURN REST credentials minted
	// with it (ice.RESTCredentials) instead of the static ones.
	Secret string
	// AllowPeer decides which peers an allocation may reach. If nil, only
	// loopback peers are allowed.
	AllowPeer func(netip.Addr) bool
	// Logger receives pion's diagnostics. If nil, nothing is logged.
	Logger *slog.Logger
}

// Server is a running STUN/TURN server.
type Server struct {
	srv      *turn.Server
	udp      net.PacketConn
	tcp      net.Listener
	addr     netip.AddrPort
	user     string
	pass     string
	secret   string
	mu       sync.Mutex
	closed   bool
	requests int
}

// Start starts a server on UDP and TCP (the same port number). ctx bounds
// the start only.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stunturn: start: %w", err)
	}
	if !cfg.Address.IsValid() {
		cfg.Address = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	if !cfg.RelayAddress.IsValid() {
		cfg.RelayAddress = cfg.Address
	}
	if cfg.Realm == "" {
		cfg.Realm = "securecall"
	}
	if cfg.Username == "" && cfg.Password == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("stunturn: random: %w", err)
		}
		cfg.Username, cfg.Password = "securecall", hex.EncodeToString(b)
	}
	if cfg.AllowPeer == nil {
		cfg.AllowPeer = func(a netip.Addr) bool { return a.IsLoopback() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{user: cfg.Username, pass: cfg.Password, secret: cfg.Secret}

	// Listen on UDP, then TCP on the same port; retry a few times when a
	// chosen UDP port is taken for TCP.
	var err error
	for range 10 {
		s.udp, err = net.ListenPacket("udp", netip.AddrPortFrom(cfg.Address, cfg.Port).String())
		if err != nil {
			return nil, fmt.Errorf("stunturn: listen udp: %w", err)
		}
		s.addr = s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
		s.addr = netip.AddrPortFrom(s.addr.Addr().Unmap(), s.addr.Port())
		s.tcp, err = net.Listen("tcp", s.addr.String())
		if err == nil {
			break
		}
		s.udp.Close()
		if cfg.Port != 0 {
			return nil, fmt.Errorf("stunturn: listen tcp: %w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stunturn: listen tcp: %w", err)
	}

	lf := &pionlog.Factory{Log: cfg.Logger, Prefix: "stunturn: "}
	var auth turn.AuthHandler
	if cfg.Secret != "" {
		auth = turn.LongTermTURNRESTAuthHandler(cfg.Secret, lf.NewLogger("auth"))
	} else {
		key := turn.GenerateAuthKey(cfg.Username, cfg.Realm, cfg.Password)
		user := cfg.Username
		auth = func(username, _ string, _ net.Addr) ([]byte, bool) {
			return key, username == user
		}
	}
	counted := func(username, realm string, src net.Addr) ([]byte, bool) {
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
		return auth(username, realm, src)
	}
	allow := func(_ net.Addr, ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && cfg.AllowPeer(a.Unmap())
	}
	gen := func() turn.RelayAddressGenerator {
		return &turn.RelayAddressGeneratorStatic{
			RelayAddress: net.IP(cfg.RelayAddress.AsSlice()),
			Address:      cfg.RelayAddress.String(),
		}
	}
	s.srv, err = turn.NewServer(turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   counted,
		LoggerFactory: lf,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: s.udp, RelayAddressGenerator: gen(), PermissionHandler: allow,
		}},
		ListenerConfigs: []turn.ListenerConfig{{
			Listener: s.tcp, RelayAddressGenerator: gen(), PermissionHandler: allow,
		}},
	})
	if err != nil {
		s.udp.Close()
		s.tcp.Close()
		return nil, fmt.Errorf("stunturn: %w", err)
	}
	return s, nil
}

// Addr returns the address the server listens on (UDP and TCP).
func (s *Server) Addr() netip.AddrPort { return s.addr }

// STUNURL returns the server's stun: URL.
func (s *Server) STUNURL() string { return "stun:" + s.hostPort() }

// TURNURL returns the server's turn: URL for UDP ("udp") or TCP ("tcp").
func (s *Server) TURNURL(transport string) string {
	return "turn:" + s.hostPort() + "?transport=" + transport
}

func (s *Server) hostPort() string {
	return net.JoinHostPort(s.addr.Addr().String(), strconv.Itoa(int(s.addr.Port())))
}

// Credentials returns TURN credentials the server accepts: the static
// ones, or REST credentials valid for an hour when the server has a
// Secret.
func (s *Server) Credentials() (username, credential string) {
	if s.secret != "" {
		return ice.RESTCredentials(s.secret, "securecall", time.Now().Add(time.Hour))
	}
	return s.user, s.pass
}

// Servers returns the server as a STUN server and a TURN-over-UDP server,
// ready for ice.Config.Servers.
func (s *Server) Servers() []ice.Server {
	u, c := s.Credentials()
	return []ice.Server{
		{URL: s.STUNURL()},
		{URL: s.TURNURL("udp"), Username: u, Credential: c},
	}
}

// AuthRequests returns how many authenticated TURN requests the server
// has checked, for tests that need to know whether a client used TURN.
func (s *Server) AuthRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Allocations returns the number of live TURN allocations.
func (s *Server) Allocations() int { return s.srv.AllocationCount() }

// Close stops the server and closes its sockets and allocations. A second
// call returns an error wrapping net.ErrClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("stunturn: close: %w", net.ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	if err := s.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("stunturn: close: %w", err)
	}
	return nil
}
