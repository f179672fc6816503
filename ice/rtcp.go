package ice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	pice "github.com/pion/ice/v3"

	"github.com/securecall/securecall/sdp"
)

// ICE component 2 (RFC 8445 section 4, RFC 8839 section 5.1): RTCP on its
// own transport, for a peer that does not multiplex RTCP with RTP (RFC
// 5761), such as baresip by default and many SIP phones. pion/ice/v3 runs
// one component per agent, so a Transport that needs component 2 runs a
// second agent with the same credentials (the peer's checks for either
// component carry the same USERNAME and are authenticated with the same
// password) and its own sockets. Its candidates are reported as component
// 2; the peer's component-2 candidates go to it; Connect checks both and
// returns one net.Conn that sends RTCP (RTP's packet types 192 to 223) on
// component 2 and reads from both. rtcp-mux stays the default: a Transport
// runs component 2 only after EnableRTCPComponent.
//
// DTLS runs on component 1 only: DTLS records that arrive on component 2
// are dropped, so that a peer that runs a second DTLS association there
// (RFC 5764 section 4.1 has one per component; baresip does) cannot disturb
// the handshake of component 1, whose keys protect SRTCP as well. With such
// a peer in dtls or hybrid keying, SRTCP does not interoperate: the peer
// keys its SRTCP from the association this side never completes. SRTP is
// unaffected, and so are kms and sdes keying, whose SRTCP keys do not come
// from DTLS.

// component is the component-2 side of a Transport.
type component struct {
	mu      sync.Mutex
	id      uint16     // 2 on the RTCP Transport itself, 0 on the RTP one
	sibling *Transport // on the RTP Transport: the component-2 agent, once enabled
}

// EnableRTCPComponent makes the Transport run ICE component 2 for RTCP as
// well (see above); call it before Gather, for a peer whose description
// has no "a=rtcp-mux". It is idempotent.
func (t *Transport) EnableRTCPComponent() error {
	if t.comp.id == 2 {
		return errors.New("ice: enable RTCP component: this is the RTCP component")
	}
	if t.ep != nil {
		return errors.New("ice: enable RTCP component: not supported on a shared Endpoint (Config.Endpoint)")
	}
	t.comp.mu.Lock()
	defer t.comp.mu.Unlock()
	if t.comp.sibling != nil {
		return nil
	}
	t.mu.Lock()
	closed, started, creds := t.closed, t.started, t.local
	t.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("ice: enable RTCP component: %w", net.ErrClosed)
	case started:
		return errors.New("ice: enable RTCP component: Connect has already been called")
	}
	cfg := t.cfg
	// The RTP component reports paths and connectivity; RTCP follows it.
	cfg.OnPathChange, cfg.OnConnectivity = nil, nil
	s, err := newTransport(cfg, &creds)
	if err != nil {
		return fmt.Errorf("ice: RTCP component: %w", err)
	}
	s.comp.id = 2
	t.comp.sibling = s
	return nil
}

// DisableRTCPComponent undoes EnableRTCPComponent before Connect, closing
// the component-2 agent; it is idempotent.
func (t *Transport) DisableRTCPComponent() error {
	t.comp.mu.Lock()
	s := t.comp.sibling
	t.comp.sibling = nil
	t.comp.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Close()
}

// RTCPComponent reports whether the Transport runs ICE component 2.
func (t *Transport) RTCPComponent() bool { return t.comp.get() != nil }

func (c *component) get() *Transport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sibling
}

// local marks a candidate the RTCP agent gathered as component 2, with the
// priority RFC 8445 section 5.1.2.1 gives it (256 minus the component id
// in the lowest byte).
func (c *component) local(cand *sdp.Candidate) {
	if c.id == 2 {
		cand.Component = 2
		if cand.Priority > 0 {
			cand.Priority--
		}
	}
}

// remote routes a component-2 candidate of the peer to the RTCP agent,
// reporting whether it did. On the RTCP agent it turns the candidate into
// the component pion expects.
func (c *component) remote(cand *sdp.Candidate) (bool, error) {
	if c.id == 2 {
		if cand.Component != 2 {
			return true, fmt.Errorf("ice: remote candidate %s: component %d on the RTCP component", cand.Foundation, cand.Component)
		}
		cand.Component = 1
		return false, nil
	}
	if cand.Component != 2 {
		return false, nil
	}
	s := c.get()
	if s == nil {
		return false, nil // refused as "rtcp-mux only" by the caller
	}
	return true, s.AddRemoteCandidate(*cand)
}

// gather gathers the RTCP agent's candidates after the RTP agent's.
func (c *component) gather(ctx context.Context, fn func(sdp.Candidate)) error {
	s := c.get()
	if s == nil {
		return nil
	}
	if err := s.Gather(ctx, fn); err != nil {
		return fmt.Errorf("ice: RTCP component: %w", err)
	}
	return nil
}

// join attaches the RTCP agent's connection to rtp: RTCP leaves on it, and
// what arrives on it reaches rtp's reader.
func (c *component) join(rtp *conn, pc *pice.Conn) {
	s := c.get()
	rc := newConnInto(pc, rtp.buf, true)
	s.mu.Lock()
	s.conn = rc
	s.mu.Unlock()
	rtp.mu.Lock()
	rtp.rtcp = rc
	rtp.mu.Unlock()
}

func (c *component) restart(creds Credentials) error {
	s := c.get()
	if s == nil {
		return nil
	}
	s.red.add(creds.Pwd)
	// The same gate as component 1's: a late report of the old
	// generation must not fail the Transport (OnFailed).
	gen := s.beginRestart(false)
	if err := s.ag().Restart(creds.Ufrag, creds.Pwd); err != nil {
		s.abortRestart()
		return fmt.Errorf("ice: restart RTCP component: %w", err)
	}
	s.mu.Lock()
	s.local = creds
	s.path = Path{}
	s.gen.Store(gen)
	s.mu.Unlock()
	return nil
}

func (c *component) setRemote(remote Peer) error {
	if s := c.get(); s != nil {
		return s.SetRemote(remote)
	}
	return nil
}

func (c *component) close() error {
	if s := c.get(); s != nil {
		return s.Close()
	}
	return nil
}
