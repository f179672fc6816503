package ice

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	pice "github.com/pion/ice/v3"
	"github.com/pion/stun/v2"

	"github.com/securecall/securecall/sdp"
)

// The documented default site networks are what withDefaults applies,
// and a caller's list is copied, not shared.
func TestSiteNetworksDefault(t *testing.T) {
	want := []string{"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "::1/128", "fc00::/7", "fe80::/10"}
	var got []string
	for _, p := range (Config{}).withDefaults().SiteNetworks {
		got = append(got, p.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("default SiteNetworks = %v, want %v (update DefaultSiteNetworks' doc and the Config field's together)", got, want)
	}
	mine := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	c := Config{SiteNetworks: mine}.withDefaults()
	c.SiteNetworks[0] = netip.MustParsePrefix("0.0.0.0/0")
	if mine[0].String() != "198.51.100.0/24" {
		t.Error("withDefaults shares the caller's SiteNetworks")
	}
	DefaultSiteNetworks()[0] = netip.MustParsePrefix("0.0.0.0/0")
	if DefaultSiteNetworks()[0].String() != "127.0.0.0/8" {
		t.Error("DefaultSiteNetworks returns a shared slice")
	}
}

func TestSiteNetworksContains(t *testing.T) {
	site := siteNetworks(DefaultSiteNetworks())
	for _, c := range []struct {
		addr string
		in   bool
	}{
		{"127.0.0.1", true}, {"10.1.2.3", true}, {"172.31.255.255", true}, {"172.32.0.1", false},
		{"192.168.1.1", true}, {"169.254.10.1", true}, {"100.64.0.1", false}, {"8.8.8.8", false},
		{"::ffff:10.0.0.1", true}, {"::ffff:8.8.8.8", false}, {"::1", true}, {"fd00::1", true},
		{"fe80::1%eth0", true}, {"2001:db8::1", false},
	} {
		if got := site.contains(netip.MustParseAddr(c.addr)); got != c.in {
			t.Errorf("contains(%s) = %v, want %v", c.addr, got, c.in)
		}
	}
}

// The last check, on the pair pion selected, refuses an off-site remote
// of any type and a relay on either side, and only under DirectOnly.
func TestPathAllowed(t *testing.T) {
	host := func(ip string) pice.Candidate {
		c, err := pice.NewCandidateHost(&pice.CandidateHostConfig{Network: "udp", Address: ip, Port: 4000, Component: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	prflx := func(ip string) pice.Candidate {
		c, err := pice.NewCandidatePeerReflexive(&pice.CandidatePeerReflexiveConfig{Network: "udp", Address: ip, Port: 4000, Component: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	relay := func(ip string) pice.Candidate {
		c, err := pice.NewCandidateRelay(&pice.CandidateRelayConfig{Network: "udp", Address: ip, Port: 4000, Component: 1, RelAddr: "10.0.0.1", RelPort: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tr := &Transport{cfg: Config{Policy: DirectOnly}.withDefaults()}
	tr.site = siteNetworks(tr.cfg.SiteNetworks)
	for _, c := range []struct {
		name          string
		local, remote pice.Candidate
		refused       bool
		typ           sdp.CandidateType
	}{
		{"host on site", host("10.0.0.1"), host("10.0.0.2"), false, ""},
		{"prflx on site", host("10.0.0.1"), prflx("192.168.1.9"), false, ""},
		{"host off site", host("10.0.0.1"), host("203.0.113.7"), true, sdp.CandidateHost},
		{"prflx off site", host("10.0.0.1"), prflx("203.0.113.7"), true, sdp.CandidatePeerReflexive},
		{"remote relay on site", host("10.0.0.1"), relay("10.0.0.3"), true, sdp.CandidateRelay},
		{"local relay", relay("10.0.0.3"), host("10.0.0.2"), true, sdp.CandidateRelay},
	} {
		err := tr.pathAllowed(c.local, c.remote)
		if (err != nil) != c.refused {
			t.Errorf("%s: pathAllowed = %v, want refused %v", c.name, err, c.refused)
			continue
		}
		if err != nil && (!errors.Is(err, ErrPolicy) || err.Type != c.typ) {
			t.Errorf("%s: pathAllowed = %#v, want a PolicyError of type %s", c.name, err, c.typ)
		}
	}
	other := &Transport{cfg: Config{}.withDefaults()}
	if err := other.pathAllowed(host("10.0.0.1"), relay("203.0.113.7")); err != nil {
		t.Errorf("PreferDirect refused a relay path: %v", err)
	}
}

// ICE-TCP connections from off the site are closed before pion sees
// them; those from the site are handed on.
func TestSiteListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var refused []netip.AddrPort
	sl := &siteListener{Listener: ln, g: &siteGuard{
		site:    siteNetworks{netip.MustParsePrefix("127.0.0.1/32")},
		refused: func(ap netip.AddrPort) { refused = append(refused, ap) },
	}}
	defer sl.Close()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	off := dial("127.0.0.2")
	defer off.Close()
	on := dial("127.0.0.1")
	defer on.Close()
	c, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.1" {
		t.Errorf("accepted a connection from %s, want only 127.0.0.1", got)
	}
	if len(refused) != 1 || refused[0].Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("refused %v, want the connection from 127.0.0.2", refused)
	}
}

// The site guard lets STUN responses from anywhere through (a STUN
// server's answer), and nothing else from off the site.
func TestSiteGuardAdmit(t *testing.T) {
	var refused int
	g := &siteGuard{site: siteNetworks{netip.MustParsePrefix("10.0.0.0/8")}, refused: func(netip.AddrPort) { refused++ }}
	on := &net.UDPAddr{IP: net.ParseIP("10.1.1.1"), Port: 1}
	off := &net.UDPAddr{IP: net.ParseIP("203.0.113.1"), Port: 1}
	request := stunWithAttr(0x0006, stun.ClassRequest, []byte("user"))
	response := stunWithAttr(0x0020, stun.ClassSuccessResponse, make([]byte, 8))
	errResponse := stunWithAttr(0x0009, stun.ClassErrorResponse, make([]byte, 4))
	indication := stunWithAttr(0x0006, stun.ClassIndication, []byte("user"))
	rtp := []byte{0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}
	for _, c := range []struct {
		name string
		b    []byte
		from net.Addr
		want bool
	}{
		{"request on site", request, on, true},
		{"media on site", rtp, on, true},
		{"request off site", request, off, false},
		{"indication off site", indication, off, false},
		{"media off site", rtp, off, false},
		{"response off site", response, off, true},
		{"error response off site", errResponse, off, true},
		{"mapped v6 off site", request, &net.UDPAddr{IP: net.ParseIP("::ffff:203.0.113.1"), Port: 1}, false},
		{"mapped v6 on site", request, &net.UDPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 1}, true},
	} {
		if got := g.admit(c.b, c.from); got != c.want {
			t.Errorf("%s: admit = %v, want %v", c.name, got, c.want)
		}
	}
	if refused != 4 {
		t.Errorf("%d refusals noted, want 4", refused)
	}
}
