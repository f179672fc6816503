package media_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// oneKey is a KeySource with a single call key version, standing in for
// the kms package's client.
type oneKey struct{ key media.CallKey }

func (o oneKey) Keys(context.Context, string) ([]media.CallKey, error) {
	return []media.CallKey{o.key}, nil
}

// Two endpoints of a call in kms keying, over an in-memory transport: each
// derives its own sending key from the shared call key, so the MKI on the
// wire is the key version and no secret ever travels with the media.
func Example() {
	keys := oneKey{media.CallKey{
		URI: "kms://example/calls/42", CallID: "42", Version: 1,
		Key: make([]byte, media.CallKeySize), // from the KMS, never all zeros
	}}
	connA, connB := net.Pipe()
	ctx := context.Background()
	alice, err := media.NewSession(ctx, connA, media.Config{
		Keying: sdp.KeyingKMS, KeySource: keys, KeyURI: "kms://example/calls/42",
		LocalID: "alice", RemoteID: "bob",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Close()
	bob, err := media.NewSession(ctx, connB, media.Config{
		Keying: sdp.KeyingKMS, KeySource: keys, KeyURI: "kms://example/calls/42",
		LocalID: "bob", RemoteID: "alice",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Close()

	go alice.WriteRTP(media.RTPHeader{PayloadType: 0, SequenceNumber: 1, Timestamp: 160, SSRC: 0xa11ce}, []byte("hello"))
	bob.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	h, n, err := bob.ReadRTP(buf)
	if err != nil {
		fmt.Println(err)
		return
	}
	st := bob.Stats()
	fmt.Printf("seq %d from %x: %s\n", h.SequenceNumber, h.SSRC, buf[:n])
	fmt.Printf("%s keying, %s, alice sends with key version %d\n", st.Keying, st.Profile, alice.Stats().SendKeyVersion)
	// Output:
	// seq 1 from a11ce: hello
	// kms keying, AEAD_AES_128_GCM, alice sends with key version 1
}
