package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CoturnConfig configures a coturn instance.
type CoturnConfig struct {
	// Namespace is the network namespace to run in; empty runs in the
	// current one.
	Namespace string
	// ListenIP and RelayIP are coturn's listening-ip and relay-ip.
	ListenIP, RelayIP string
	// Port is the STUN/TURN port for UDP and TCP; TLSPort, if not zero,
	// enables TURN over TLS with CertFile and KeyFile.
	Port, TLSPort     int
	CertFile, KeyFile string
	// MinPort and MaxPort bound the relay ports.
	MinPort, MaxPort int
	// User and Password are long-term credentials; Secret, if set, enables
	// REST credentials (use-auth-secret) instead.
	User, Password string
	Secret         string
	// AllowLoopbackPeers lets allocations reach 127.x peers.
	AllowLoopbackPeers bool
	// DeniedPeers are ranges ("10.0.0.0-10.255.255.255") allocations may
	// not reach.
	DeniedPeers []string
	// Dir holds the config file, database, pid file and log.
	Dir string
}

// Coturn is a running turnserver.
type Coturn struct {
	proc *Process
	log  *syncBuffer
	once sync.Once
}

// CoturnAvailable reports why coturn cannot run here, or nil.
func CoturnAvailable() error {
	if _, err := exec.LookPath("turnserver"); err != nil {
		return fmt.Errorf("natlab: needs turnserver (Debian package coturn): %w", err)
	}
	return nil
}

// StartCoturn writes a config file and runs turnserver in the foreground,
// waiting until it listens on cfg.Port (and cfg.TLSPort).
func StartCoturn(ctx context.Context, cfg CoturnConfig) (*Coturn, error) {
	if err := CoturnAvailable(); err != nil {
		return nil, err
	}
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\n") }
	line("listening-ip=" + cfg.ListenIP)
	line("relay-ip=" + cfg.RelayIP)
	line("listening-port=" + strconv.Itoa(cfg.Port))
	if cfg.TLSPort != 0 {
		line("tls-listening-port=" + strconv.Itoa(cfg.TLSPort))
		line("cert=" + cfg.CertFile)
		line("pkey=" + cfg.KeyFile)
		line("no-dtls")
	} else {
		line("no-tls")
		line("no-dtls")
	}
	if cfg.MinPort != 0 {
		line("min-port=" + strconv.Itoa(cfg.MinPort))
		line("max-port=" + strconv.Itoa(cfg.MaxPort))
	}
	line("realm=securecall.test")
	if cfg.Secret != "" {
		line("use-auth-secret")
		line("static-auth-secret=" + cfg.Secret)
	} else {
		line("lt-cred-mech")
		line("user=" + cfg.User + ":" + cfg.Password)
	}
	if cfg.AllowLoopbackPeers {
		line("allow-loopback-peers")
	}
	for _, d := range cfg.DeniedPeers {
		line("denied-peer-ip=" + d)
	}
	line("fingerprint")
	line("no-cli")
	line("no-rfc5780")
	line("no-stun-backward-compatibility")
	line("log-file=stdout")
	line("simple-log")
	line("userdb=" + filepath.Join(cfg.Dir, "turndb"))
	line("pidfile=" + filepath.Join(cfg.Dir, "turnserver.pid"))
	conf := filepath.Join(cfg.Dir, "turnserver.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("natlab: coturn config: %w", err)
	}
	args := []string{"turnserver", "-c", conf}
	if cfg.Namespace != "" {
		args = append([]string{"ip", "netns", "exec", cfg.Namespace}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	c := &Coturn{log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	p, err := StartProcess(cmd)
	if err != nil {
		return nil, err
	}
	c.proc = p
	for _, port := range []int{cfg.Port, cfg.TLSPort} {
		if port == 0 {
			continue
		}
		if err := waitListening(ctx, cfg.Namespace, net.JoinHostPort(cfg.ListenIP, strconv.Itoa(port)), p); err != nil {
			c.Close()
			return nil, fmt.Errorf("%w; coturn log:\n%s", err, c.Log())
		}
	}
	return c, nil
}

// waitListening waits until a TCP listener on addr exists in ns.
func waitListening(ctx context.Context, ns, addr string, p *Process) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		args := []string{"ss", "-Hltn"}
		if ns != "" {
			args = append([]string{"ip", "netns", "exec", ns}, args...)
		}
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
		if err == nil && bytes.Contains(out, []byte(addr+" ")) {
			return nil
		}
		select {
		case <-p.Done():
			return errors.New("natlab: turnserver exited at start")
		case <-ctx.Done():
			return fmt.Errorf("natlab: turnserver does not listen on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID returns the turnserver's process id.
func (c *Coturn) PID() int { return c.proc.PID() }

// Log returns what turnserver has written so far.
func (c *Coturn) Log() string { return c.log.String() }

// Close kills turnserver by its PID and waits for it.
func (c *Coturn) Close() error {
	err := fmt.Errorf("natlab: close coturn: %w", net.ErrClosed)
	c.once.Do(func() {
		c.proc.kill()
		err = nil
	})
	return err
}

// StartCoturn runs coturn in the Lab's public namespace on 203.0.113.1:3478
// with long-term credentials; the Lab's Close stops it. Allocations may
// not reach the hosts' private addresses (coturn 4.6.1 would otherwise
// drop a whole allocation when a peer sends there).
func (l *Lab) StartCoturn(ctx context.Context, dir, user, password string) (*Coturn, error) {
	c, err := StartCoturn(ctx, CoturnConfig{
		Namespace: l.Public, ListenIP: PublicServerIP, RelayIP: PublicServerIP,
		Port: 3478, MinPort: 49152, MaxPort: 49999, User: user, Password: password,
		DeniedPeers: []string{"10.0.0.0-10.255.255.255"}, Dir: dir,
	})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, c.proc)
	l.mu.Unlock()
	return c, nil
}

// FreePort returns a port that was free on ip for both TCP and UDP a
// moment ago.
func FreePort(ip string) (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return 0, fmt.Errorf("natlab: free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("natlab: no free port")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
