package securecall

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"unsafe"

	"github.com/securecall/securecall/media"
	"github.com/securecall/securecall/sdp"
)

// TestCallSizeClass keeps a Call within the 1,792-byte size class of Go's
// allocator on 64-bit platforms: one class up costs 256 bytes per call
// end, and BENCHMARKS.md's heap per endpoint (at most 20 KB, issue 14)
// counts on this one. A field that must grow it should come with a trim
// elsewhere or a new figure there.
func TestCallSizeClass(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the size class is that of 64-bit platforms")
	}
	if n := unsafe.Sizeof(Call{}); n > 1792 {
		t.Fatalf("a Call is %d bytes, past the 1,792-byte size class", n)
	}
}

// TestCallCertificateOnlyForDTLS checks that a Call keeps the certificate
// its keying uses, the configured one or one it made, and none when the
// keying needs no DTLS: a kms-keyed Call given a certificate holds no
// reference to its private key.
func TestCallCertificateOnlyForDTLS(t *testing.T) {
	cert, err := media.GenerateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	fp, err := media.CertificateFingerprint(cert)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Keying: sdp.KeyingDTLS, Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.Certificate.PrivateKey != cert.PrivateKey || !bytes.Equal(c.print.Value, fp.Value) {
		t.Fatal("dtls keying does not use the configured certificate")
	}
	made, err := New(Config{Keying: sdp.KeyingDTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer made.Close()
	if len(made.cfg.Certificate.Certificate) == 0 || made.cfg.Certificate.PrivateKey == nil {
		t.Fatal("dtls keying without a certificate made none")
	}
	if mfp, _ := media.CertificateFingerprint(made.cfg.Certificate); !bytes.Equal(mfp.Value, made.print.Value) {
		t.Fatal("the fingerprint offered is not the made certificate's")
	}
	kms, err := New(Config{Keying: sdp.KeyingKMS, KeySource: noKeys{}, Certificate: cert})
	if err != nil {
		t.Fatal(err)
	}
	defer kms.Close()
	if kms.cfg.Certificate.PrivateKey != nil || len(kms.cfg.Certificate.Certificate) != 0 {
		t.Fatal("kms keying keeps a certificate it does not use")
	}
}

// noKeys is a KeySource for a Call that never fetches.
type noKeys struct{}

func (noKeys) Keys(context.Context, string) ([]media.CallKey, error) {
	return nil, errors.New("no keys here")
}
