// Command kms-server runs the reference KMS on loopback for development.
//
// On first start it creates, in -dir, a development CA, a server
// certificate for 127.0.0.1, a certificate and key per device, a
// key-encryption key and the store; later starts reuse them. It prints its
// address, the credentials' paths and how to use them, and serves until
// interrupted.
//
//	go run ./examples/kms-server -dir /tmp/x
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/securecall/securecall/internal/devkms"
	"github.com/securecall/securecall/kms/kmsserver/pgstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kms-server:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kms-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for the CA, certificates, KEK and store (required)")
	addr := fs.String("addr", "127.0.0.1:8443", "loopback address to listen on")
	devices := fs.String("devices", "alice,bob,carol", "comma-separated device identities to issue certificates for")
	verbose := fs.Bool("v", false, "log every rotation and failure to stderr")
	postgres := fs.String("postgres", "", "keep the state in this PostgreSQL database (a connection string) instead of -dir's file; several replicas may share it")
	baseURL := fs.String("base-url", "", "the KMS's name in key URIs (replicas share one, e.g. the first replica's https://127.0.0.1:PORT); default: the request's host")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return errors.New("-dir is required")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: this development server only listens on loopback", *addr)
	}
	var ids []string
	for _, id := range strings.Split(*devices, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	opts := devkms.Options{Addr: *addr}
	opts.Server.BaseURL = *baseURL
	if *postgres != "" {
		store, err := pgstore.Open(ctx, *postgres)
		if err != nil {
			return err
		}
		defer store.Close()
		opts.Store = store
	}
	if *verbose {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	env, err := devkms.StartWith(ctx, abs, opts, ids...)
	if err != nil {
		return err
	}
	defer env.Close()

	// examples/caller and examples/callee find the server through this file.
	if err := os.WriteFile(filepath.Join(abs, "kms-url"), []byte(env.URL+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "kms-server: listening on %s\n", env.URL)
	fmt.Fprintf(stdout, "  URL file:        %s\n", filepath.Join(abs, "kms-url"))
	fmt.Fprintf(stdout, "  CA certificate:  %s\n", filepath.Join(abs, "ca.pem"))
	fmt.Fprintf(stdout, "  signing keys:    %s (clients pin them: kms.Config.KMSKeys)\n", filepath.Join(abs, devkms.KMSKeysFile))
	storeName := filepath.Join(abs, devkms.StoreFile)
	if *postgres != "" {
		storeName = "PostgreSQL (-postgres; shared with any other replica)"
	}
	fmt.Fprintf(stdout, "  store:           %s (key material sealed under %s)\n", storeName, filepath.Join(abs, devkms.KEKFile))
	for _, id := range ids {
		cert, key := devkms.DevicePaths(abs, id)
		fmt.Fprintf(stdout, "  device %-8s  cert %s\n                   key  %s\n", id+":", cert, key)
	}
	first := "alice"
	if len(ids) > 0 {
		first = ids[0]
	}
	cert, key := devkms.DevicePaths(abs, first)
	fmt.Fprintf(stdout, `
Use from Go (package github.com/securecall/securecall/kms):
  cert, _ := tls.LoadX509KeyPair(%q, %q)
  roots := x509.NewCertPool(); roots.AppendCertsFromPEM(caPEM) // %s
  kmsKeys, _ := kms.ParseKMSKeys(jwks)                         // %s
  c, _ := kms.NewClient(kms.Config{URL: %q, Certificate: cert, RootCAs: roots, KMSKeys: kmsKeys})
  c.Register(ctx); uri, _ := c.CreateCall(ctx, kms.CallOptions{Participants: []string{%q}})
  keys, _ := c.Fetch(ctx, uri)

Fetch a call's wrapped keys with curl (reads need no proof of freshness):
  curl --cacert %s --cert %s --key %s %s/v1/calls/CALL-ID/keys

Ctrl-C stops the server; everything stays in %s for the next start.
`, cert, key, filepath.Join(abs, "ca.pem"), filepath.Join(abs, devkms.KMSKeysFile), env.URL, first,
		filepath.Join(abs, "ca.pem"), cert, key, env.URL, abs)

	<-ctx.Done()
	fmt.Fprintln(stdout, "kms-server: stopping")
	return env.Close()
}
