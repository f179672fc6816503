package stunturn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/internal/stunturn"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServer(t *testing.T) {
	s, err := stunturn.Start(context.Background(), stunturn.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Addr().Addr().IsLoopback() || s.Addr().Port() == 0 {
		t.Errorf("Addr = %v, want a loopback port", s.Addr())
	}
	srv := s.Servers()
	if len(srv) != 2 || !strings.HasPrefix(srv[0].URL, "stun:127.0.0.1:") || !strings.HasPrefix(srv[1].URL, "turn:127.0.0.1:") {
		t.Errorf("Servers = %v", srv)
	}
	u, p := s.Credentials()
	if u != "securecall" || len(p) != 32 || srv[1].Username != u || srv[1].Credential != p {
		t.Errorf("credentials %q/%d bytes", u, len(p))
	}
	// A STUN binding request is answered.
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil || n < 20 || buf[0] != 0x01 || buf[1] != 0x01 {
		t.Errorf("binding response: %x, %v", buf[:n], err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}

func TestServerREST(t *testing.T) {
	s, err := stunturn.Start(context.Background(), stunturn.Config{Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if u, _ := s.Credentials(); !strings.HasSuffix(u, ":securecall") {
		t.Errorf("REST username %q", u)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := stunturn.Start(ctx, stunturn.Config{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context = %v", err)
	}
}

func Example() {
	s, err := stunturn.Start(context.Background(), stunturn.Config{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	for _, srv := range s.Servers() {
		fmt.Println(strings.SplitN(srv.URL, ":", 2)[0], srv.Username != "")
	}
	// Output:
	// stun false
	// turn true
}
