package kms_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/securecall/securecall/kms"
	"github.com/securecall/securecall/kms/kmsserver"
)

// Two devices share a call key: alice creates it, bob fetches it, alice
// rotates it and bob sees both versions. The reference KMS runs in the
// process, and the devices authenticate with bearer tokens from an
// identity provider whose key the KMS trusts.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kms-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// The KMS: a file store, a key-encryption key kept apart from it, and
	// the identity provider's public key.
	store, err := kmsserver.OpenFileStore(filepath.Join(dir, "kms.db"))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	kek := make([]byte, 32)
	rand.Read(kek)
	idp, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv, err := kmsserver.New(kmsserver.Config{Store: store, KEK: kek, TokenKeys: []crypto.PublicKey{&idp.PublicKey}})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	ts := httptest.NewUnstartedServer(srv)
	ts.StartTLS()
	defer ts.Close()

	// What a device is given: the KMS URL, its TLS root, the KMS's signing
	// keys to pin, and a token for its identity.
	roots := x509.NewCertPool()
	roots.AddCert(ts.Certificate())
	jwks, err := srv.SigningKeysJWKS()
	if err != nil {
		panic(err)
	}
	kmsKeys, err := kms.ParseKMSKeys(jwks)
	if err != nil {
		panic(err)
	}
	device := func(identity string) *kms.Client {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: idp}, nil)
		token, _ := jwt.Signed(signer).Claims(jwt.Claims{Subject: identity, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c, err := kms.NewClient(kms.Config{URL: ts.URL, RootCAs: roots, KMSKeys: kmsKeys, Token: token, DeviceKey: key})
		if err != nil {
			panic(err)
		}
		if err := c.Register(ctx); err != nil {
			panic(err)
		}
		return c
	}
	alice, bob, mallory := device("alice"), device("bob"), device("mallory")
	defer alice.Close()
	defer bob.Close()
	defer mallory.Close()

	// A token's subject "alice" is the identity "token:alice".
	uri, err := alice.CreateCall(ctx, kms.CallOptions{Participants: []string{"token:alice", "token:bob"}})
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
	_, err = mallory.Fetch(ctx, uri)
	fmt.Println(err, errors.Is(err, kms.ErrForbidden))
	// Output:
	// version 1: 32-byte key, redacted when printed: true
	// version 2: 32-byte key, redacted when printed: true
	// kms: fetch: 403 forbidden true
}
