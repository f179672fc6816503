package ice

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the TURN REST API (and coturn) define the credential as HMAC-SHA1
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/pion/stun/v2"
)

// Server is a STUN or TURN server.
//
// URL is "stun:host[:port]", "turn:host[:port][?transport=udp|tcp]" or
// "turns:host[:port][?transport=tcp]" (RFC 7064, RFC 7065). Username and
// Credential are the TURN long-term credentials, static or minted with
// RESTCredentials; STUN servers need none. Printing a Server redacts the
// credential.
type Server struct {
	URL        string
	Username   string
	Credential string
}

// String returns the server's URL and user name, never its credential.
func (s Server) String() string {
	if s.Username == "" {
		return s.URL
	}
	return s.URL + " (user " + strconv.Quote(s.Username) + ")"
}

// GoString is like String, so that %#v does not print the credential.
func (s Server) GoString() string {
	return "ice.Server{URL: " + strconv.Quote(s.URL) + ", Username: " + strconv.Quote(s.Username) + ", Credential: [redacted]}"
}

// LogValue logs the server without its credential.
func (s Server) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", s.URL), slog.String("username", s.Username))
}

// parse checks the server and returns pion's form of it.
func (s Server) parse() (*stun.URI, error) {
	u, err := stun.ParseURI(s.URL)
	if err != nil {
		return nil, fmt.Errorf("ice: server URL %q: %w", s.URL, err)
	}
	switch u.Scheme {
	case stun.SchemeTypeSTUN, stun.SchemeTypeSTUNS:
		if u.Scheme == stun.SchemeTypeSTUNS {
			return nil, fmt.Errorf("ice: server URL %q: stuns: is not supported (use a stun: URL)", s.URL)
		}
	case stun.SchemeTypeTURN, stun.SchemeTypeTURNS:
		if s.Username == "" || s.Credential == "" {
			return nil, fmt.Errorf("ice: TURN server %q needs a Username and a Credential", s.URL)
		}
		if u.Scheme == stun.SchemeTypeTURNS && u.Proto != stun.ProtoTypeTCP {
			return nil, fmt.Errorf("ice: server URL %q: turns: is supported over TCP only", s.URL)
		}
		u.Username = s.Username
		u.Password = s.Credential
	default:
		return nil, fmt.Errorf("ice: server URL %q: unknown scheme", s.URL)
	}
	return u, nil
}

// hostPort returns the server's address as "host:port".
func hostPort(u *stun.URI) string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// RESTCredentials mints ephemeral TURN credentials from a secret shared
// with the TURN server, as the TURN REST API draft and coturn's
// use-auth-secret expect: the username is "expiry:user" (just the expiry,
// in Unix seconds, when user is empty) and the credential is the base64 of
// HMAC-SHA1(secret, username). The server refuses them after expiry.
func RESTCredentials(secret, user string, expiry time.Time) (username, credential string) {
	username = strconv.FormatInt(expiry.Unix(), 10)
	if user != "" {
		username += ":" + user
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Credentials are the local ICE username fragment and password, sent to
// the peer in the SDP. Printing Credentials redacts the password.
type Credentials struct {
	Ufrag string
	Pwd   string
}

// String returns the ufrag, never the password.
func (c Credentials) String() string { return "ufrag " + strconv.Quote(c.Ufrag) + " pwd [redacted]" }

// GoString is like String.
func (c Credentials) GoString() string {
	return "ice.Credentials{Ufrag: " + strconv.Quote(c.Ufrag) + ", Pwd: [redacted]}"
}

// LogValue logs the ufrag only.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Peer is the remote side as described by its SDP: its ICE credentials and
// whether it is ICE-Lite. Printing a Peer redacts the password.
type Peer struct {
	Ufrag string
	Pwd   string
	Lite  bool
}

// String returns the ufrag and the Lite flag, never the password.
func (p Peer) String() string {
	return "ufrag " + strconv.Quote(p.Ufrag) + " pwd [redacted] lite " + strconv.FormatBool(p.Lite)
}

// GoString is like String.
func (p Peer) GoString() string {
	return "ice.Peer{Ufrag: " + strconv.Quote(p.Ufrag) + ", Pwd: [redacted], Lite: " + strconv.FormatBool(p.Lite) + "}"
}

// LogValue logs the ufrag and the Lite flag only.
func (p Peer) LogValue() slog.Value { return slog.StringValue(p.String()) }
