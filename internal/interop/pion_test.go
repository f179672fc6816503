package interop

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/securecall/securecall"
	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/media"
)

// pionPackets is how many audio packets each side of a call with pion
// must receive.
const pionPackets = 25

// loopbackICE keeps a Call's candidates on loopback, IPv4. The IPFilter
// is what lets the ice package gather loopback addresses at all.
func loopbackICE() ice.Config {
	return ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() },
		Networks:        []ice.Network{ice.UDP4},
	}
}

// TestInteropPionWebRTC calls between a pion/webrtc/v4 PeerConnection and a
// securecall Call in dtls keying, each side offering in turn, with each
// SRTP protection profile forced on both sides: audio must flow both ways
// with the negotiated payload type and the forced profile.
func TestInteropPionWebRTC(t *testing.T) {
	profiles := []struct {
		pion dtls.SRTPProtectionProfile
		ours media.Profile
	}{
		{dtls.SRTP_AEAD_AES_128_GCM, media.ProfileAEADAES128GCM},
		{dtls.SRTP_AES128_CM_HMAC_SHA1_80, media.ProfileAES128CMHMACSHA1_80},
	}
	for _, p := range profiles {
		for _, offerer := range []string{"pion", "securecall"} {
			t.Run(p.ours.String()+"/"+offerer+"-offers", func(t *testing.T) {
				pionCall(t, offerer == "pion", p.pion, p.ours)
			})
		}
	}
}

func pionCall(t *testing.T, pionOffers bool, pionProfile dtls.SRTPProtectionProfile, profile media.Profile) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := newPionEndpoint(pionOptions{Profiles: []dtls.SRTPProtectionProfile{pionProfile}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	call, err := newCallEndpoint(securecall.Config{ICE: loopbackICE(), Profiles: []media.Profile{profile}})
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()

	if pionOffers {
		err = connectPair(ctx, pc, call)
	} else {
		err = connectPair(ctx, call, pc)
	}
	if err != nil {
		t.Fatal(err)
	}
	name, pt := call.Codec()
	pionName, pionPT := pc.Codec()
	if name != "opus" || pionName != "opus" || pt != pionPT {
		t.Fatalf("negotiated %s/%d at securecall and %s/%d at pion, want opus on both", name, pt, pionName, pionPT)
	}

	callRecv, pionRecv := startReceiver(ctx, call), startReceiver(ctx, pc)
	for _, e := range []endpoint{call, pc} {
		s := startSender(e)
		defer s.close()
	}
	if err := callRecv.wait(ctx, pionPackets); err != nil {
		t.Fatalf("pion's audio at securecall: %v; stats %+v", err, call.Stats())
	}
	if err := pionRecv.wait(ctx, pionPackets); err != nil {
		t.Fatalf("securecall's audio at pion: %v; securecall stats %+v", err, call.Stats())
	}
	for side, r := range map[string]*receiver{"securecall": callRecv, "pion": pionRecv} {
		if n, pts := r.count(); pts[pt] != n {
			t.Fatalf("%s received payload types %v, want only %d", side, pts, pt)
		}
	}
	st := call.Stats()
	if st.Profile != profile {
		t.Fatalf("securecall's session uses %s, want the forced %s", st.Profile, profile)
	}
	if st.AuthFailures != 0 || st.ReplaysDropped != 0 {
		t.Fatalf("securecall stats %+v", st)
	}
	n1, _ := callRecv.count()
	n2, _ := pionRecv.count()
	t.Logf("%s: securecall received %d opus packets from pion, pion %d from securecall; path %s -> %s",
		st.Profile, n1, n2, call.Path().Local.Address, call.Path().Remote.Address)
}
