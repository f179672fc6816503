package interop

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/testpki"
)

const coturnRealm = "securecall.test"

// coturnAuth selects coturn's credential mechanism.
type coturnAuth struct {
	// User and Password, for long-term credentials (lt-cred-mech).
	User, Password string
	// Secret, for REST credentials (use-auth-secret): usernames are
	// "expiry:user" and passwords HMAC-SHA1 of the username under Secret.
	Secret string
}

// coturn is a turnserver process of one test, listening on loopback for
// TURN over UDP and TCP on Port and over TLS on TLSPort.
type coturn struct {
	Port, TLSPort int
	// MinPort and MaxPort bound the relay addresses coturn allocates.
	MinPort, MaxPort int
	// Roots trusts the server's TLS certificate, for turns: URLs.
	Roots *x509.CertPool
	proc  *process
}

// startCoturn runs coturn in the foreground from a config file in a
// temporary directory, with a self-signed certificate for TLS, and waits
// until it accepts connections. It is stopped by PID in t's cleanup.
func startCoturn(t testing.TB, auth coturnAuth) *coturn {
	t.Helper()
	bin := needTool(t, "turnserver", "coturn")
	dir := t.TempDir()

	ca, err := testpki.NewCA("securecall interop test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Server(testpki.Validity{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := testpki.WriteFiles(cert, certFile, keyFile); err != nil {
		t.Fatal(err)
	}

	c := &coturn{Port: freePort(t, "tcp"), TLSPort: freePort(t, "tcp"), Roots: ca.Pool()}
	// A relay port range of its own, away from the ephemeral range that
	// the test's sockets use.
	c.MinPort = 20000 + int(time.Now().UnixNano()%400)*100
	c.MaxPort = c.MinPort + 99
	conf := []string{
		"listening-ip=127.0.0.1",
		"relay-ip=127.0.0.1",
		fmt.Sprintf("listening-port=%d", c.Port),
		fmt.Sprintf("tls-listening-port=%d", c.TLSPort),
		fmt.Sprintf("min-port=%d", c.MinPort),
		fmt.Sprintf("max-port=%d", c.MaxPort),
		"realm=" + coturnRealm,
		"fingerprint",
		// The peers of these tests are on loopback, which coturn refuses
		// by default.
		"allow-loopback-peers",
		"no-multicast-peers",
		"no-cli",
		"no-dtls",
		"log-file=stdout",
		"simple-log",
		"userdb=" + filepath.Join(dir, "turndb"),
		"pidfile=" + filepath.Join(dir, "turnserver.pid"),
		"cert=" + certFile,
		"pkey=" + keyFile,
	}
	if auth.Secret != "" {
		conf = append(conf, "use-auth-secret", "static-auth-secret="+auth.Secret)
	} else {
		conf = append(conf, "lt-cred-mech", fmt.Sprintf("user=%s:%s", auth.User, auth.Password))
	}
	confFile := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(confFile, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.proc = startProcess(t, bin, "-c", confFile)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ready := func() bool {
		select {
		case <-c.proc.done:
			return true
		default:
		}
		for _, port := range []int{c.Port, c.TLSPort} {
			conn, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
			if err != nil {
				return false
			}
			conn.Close()
		}
		return udpBound(c.Port)
	}
	if err := waitFor(ctx, "coturn to listen", ready); err != nil {
		t.Fatalf("%v\n%s", err, lastLines(c.proc.out.String(), 40))
	}
	select {
	case <-c.proc.done:
		t.Fatalf("coturn exited at start: %v\n%s", c.proc.err, lastLines(c.proc.out.String(), 40))
	default:
	}
	return c
}

// URL returns the server's address as a TURN URL for transport "udp",
// "tcp" or "tls".
func (c *coturn) URL(transport string) string {
	switch transport {
	case "tls":
		return fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", c.TLSPort)
	default:
		return fmt.Sprintf("turn:127.0.0.1:%d?transport=%s", c.Port, transport)
	}
}
