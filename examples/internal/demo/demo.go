// Package demo holds what the two-process examples (caller and callee)
// share: loading a device's KMS credentials from the directory that
// examples/kms-server writes, the loopback ICE settings, and the tone they
// send.
package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/securecall/securecall/ice"
	"github.com/securecall/securecall/kms"
)

// URLFile is the file in the KMS directory that holds the server's URL.
const URLFile = "kms-url"

// KMSKeysFile is the file in the KMS directory that holds the server's
// signing keys, which every client pins.
const KMSKeysFile = "kms-keys.jwks"

// KMSClient returns a registered KMS client for identity, with the
// credentials examples/kms-server created in dir: the development CA in
// ca.pem, the KMS signing keys in kms-keys.jwks and the device certificate
// and key in device-ID.pem and device-ID-key.pem. If url is empty it is read from dir/kms-url.
func KMSClient(ctx context.Context, dir, url, identity string) (*kms.Client, error) {
	if url == "" {
		b, err := os.ReadFile(filepath.Join(dir, URLFile))
		if err != nil {
			return nil, fmt.Errorf("read the KMS URL (is examples/kms-server running with -dir %s?): %w", dir, err)
		}
		url = strings.TrimSpace(string(b))
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in ca.pem")
	}
	cert, err := tls.LoadX509KeyPair(
		filepath.Join(dir, "device-"+identity+".pem"),
		filepath.Join(dir, "device-"+identity+"-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("device credentials of %q: %w", identity, err)
	}
	jwks, err := os.ReadFile(filepath.Join(dir, KMSKeysFile))
	if err != nil {
		return nil, err
	}
	kmsKeys, err := kms.ParseKMSKeys(jwks)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KMSKeysFile, err)
	}
	c, err := kms.NewClient(kms.Config{URL: url, Certificate: cert, RootCAs: roots, KMSKeys: kmsKeys})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Register(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("register %q at the KMS: %w", identity, err)
	}
	return c, nil
}

// LoopbackICE keeps the examples' media on 127.0.0.1.
func LoopbackICE() ice.Config {
	return ice.Config{
		InterfaceFilter: func(name string) bool { return name == "lo" },
		IPFilter:        func(a netip.Addr) bool { return a.IsLoopback() && a.Is4() },
		Networks:        []ice.Network{ice.UDP4},
	}
}
