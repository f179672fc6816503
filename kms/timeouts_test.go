package kms_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// closedWithin reports whether the server closes c within d (reading and
// discarding whatever it sends first).
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

// The server's documented deployment (Server.HTTPServer on
// Server.LimitListener, as devkms serves it) closes silent connections,
// connections after a 401, idle keep-alives and slow bodies, and does not
// cut a long-poll short.
func TestSecurityServerTimeouts(t *testing.T) {
	env := startEnv(t, devkms.Options{Server: kmsserver.Config{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 500 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond, IdleTimeout: 400 * time.Millisecond, MaxWatchWait: 2 * time.Second}}, "alice")
	alice := mustClient(t, env, "alice")
	ctx := ctxT(t)
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(env.URL, "https://")
	cfg, _ := env.ClientConfig("alice")
	dialTLS := func(cert *tls.Certificate) *tls.Conn {
		tc := &tls.Config{RootCAs: env.RootCAs(), NextProtos: []string{"http/1.1"}}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c, err := tls.Dial("tcp", addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	path := uri[len(env.URL):] + "/keys"

	t.Run("silent connection", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if !closedWithin(c, 3*time.Second) {
			t.Fatal("a connection that sends nothing stays open")
		}
	})
	t.Run("after 401", func(t *testing.T) {
		c := dialTLS(nil)
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%v %v", resp, err)
		}
		if !closedWithin(c, time.Second) {
			t.Fatal("the connection stays open after a 401")
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dialTLS(&cfg.Certificate)
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		if !closedWithin(c, 3*time.Second) {
			t.Fatal("an idle keep-alive connection stays open")
		}
	})
	t.Run("slow body", func(t *testing.T) {
		c := dialTLS(&cfg.Certificate)
		io.WriteString(c, "POST /v1/calls HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: 100\r\n\r\n")
		closed := make(chan bool, 1)
		go func() { closed <- closedWithin(c, 5*time.Second) }()
		for range 40 {
			if _, err := c.Write([]byte("{")); err != nil {
				break
			}
			select {
			case ok := <-closed:
				if !ok {
					t.Fatal("a slow body holds the connection")
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		if !<-closed {
			t.Fatal("a slow body holds the connection")
		}
	})
	t.Run("long-poll outlives WriteTimeout", func(t *testing.T) {
		hc := &http.Client{Transport: transport(t, env, cfg.Certificate)}
		start := time.Now()
		resp, err := hc.Get(env.URL + path + "?after=1&wait=1200")
		if err != nil {
			t.Fatalf("long-poll cut: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || time.Since(start) < time.Second {
			t.Fatalf("long-poll: %d %q %v after %v", resp.StatusCode, body, err, time.Since(start))
		}
	})
}
