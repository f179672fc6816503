package media

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/securecall/securecall/sdp"
)

// certificateValidity is how long a generated certificate is valid. DTLS
// peers check the fingerprint, not the dates, but some stacks reject expired
// certificates; 30 days matches what browsers generate.
const certificateValidity = 30 * 24 * time.Hour

// GenerateCertificate returns a new self-signed ECDSA P-256 certificate for
// DTLS-SRTP. Its identity is its fingerprint (see [CertificateFingerprint]),
// which the signaling carries. Generating one costs about a tenth of a
// millisecond of CPU; a certificate may be reused for many sessions.
func GenerateCertificate() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("media: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("media: generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "securecall"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certificateValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("media: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// CertificateFingerprint returns the SHA-256 fingerprint of cert's leaf
// certificate, as an "a=fingerprint" attribute carries it.
func CertificateFingerprint(cert tls.Certificate) (sdp.Fingerprint, error) {
	if len(cert.Certificate) == 0 {
		return sdp.Fingerprint{}, errors.New("media: certificate is empty")
	}
	sum := sha256.Sum256(cert.Certificate[0])
	return sdp.Fingerprint{Algorithm: "sha-256", Value: sum[:]}, nil
}
