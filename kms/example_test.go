package kms_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms"
)

// Two devices share a call key: alice creates it, bob fetches it, alice
// rotates it and bob sees both versions.
func Example() {
	dir, err := os.MkdirTemp("", "kms-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	env, err := devkms.Start(ctx, dir, "alice", "bob")
	if err != nil {
		panic(err)
	}
	defer env.Close()
	alice, _ := env.Client("alice")
	bob, _ := env.Client("bob")

	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"alice", "bob"}})
	if err != nil {
		panic(err)
	}
	if _, err := alice.Rotate(ctx, uri); err != nil {
		panic(err)
	}
	keys, err := bob.Fetch(ctx, uri)
	if err != nil {
		panic(err)
	}
	for _, k := range keys {
		fmt.Printf("version %d: %d-byte key, redacted when printed: %t\n",
			k.Version, len(k.Key), strings.Contains(k.String(), "Key: [REDACTED]"))
	}

	// A device that is not a participant learns nothing.
	mallory, err := env.Client("mallory")
	if err != nil {
		panic(err)
	}
	_, err = mallory.Fetch(ctx, uri)
	fmt.Println(err, errors.Is(err, kms.ErrForbidden))
	// Output:
	// version 1: 32-byte key, redacted when printed: true
	// version 2: 32-byte key, redacted when printed: true
	// kms: fetch: 403 forbidden true
}
