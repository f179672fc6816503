package kms

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/securecall/securecall/kms/internal/wire"
)

// Sentinel errors that callers branch on. Errors returned by [Client]
// methods wrap one of them when it applies; test with [errors.Is].
var (
	// ErrUnauthorized: the KMS did not accept the device's credentials
	// (unknown CA, expired certificate or token, bad signature, device key
	// not registered). Retrying with the same credentials will not help.
	ErrUnauthorized = errors.New("kms: unauthorized")
	// ErrForbidden: the device is authenticated but not a participant of
	// the call (or no longer is). The KMS says nothing else.
	ErrForbidden = errors.New("kms: forbidden")
	// ErrDeviceRevoked: the KMS operator has revoked this device (a lost
	// or stolen one): the KMS refuses every request of it, whatever its
	// credentials, until the operator restores it. Retrying, or another
	// replica, will not help. It is a 403, so an error that is
	// ErrDeviceRevoked is ErrForbidden too.
	ErrDeviceRevoked = errors.New("kms: device revoked")
	// ErrNotFound: no call key has this URI.
	ErrNotFound = errors.New("kms: not found")
	// ErrInvalidKeyURI: the client refused a key URI before sending
	// anything: it does not name a call key at this client's KMS (another
	// host or path, or a call id that is not 1 to 128 of URL's unreserved
	// characters, or is a dot segment). The URI comes from the signaling
	// path. An error that is ErrInvalidKeyURI is ErrNotFound too.
	ErrInvalidKeyURI error = invalidKeyURI{}
	// ErrRevoked: the requested key version is compromised or destroyed.
	ErrRevoked = errors.New("kms: key revoked")
	// ErrBelowMinimum: the requested version is below the call's minimum
	// usable version.
	ErrBelowMinimum = errors.New("kms: key version below minimum")
	// ErrExpired: the requested version is past its expiry (or its grace
	// period after a newer version activated).
	ErrExpired = errors.New("kms: key version expired")
	// ErrUnavailable: the KMS could not be reached or failed; the request
	// may succeed later.
	ErrUnavailable = errors.New("kms: unavailable")
	// ErrReplayed: the KMS refused a state-changing request whose proof of
	// freshness it had already seen or that was too old.
	ErrReplayed = errors.New("kms: replayed request")
	// ErrInvalidDelivery: a wrapped key from the KMS failed the client's
	// checks. The [DeliveryError] says which one.
	ErrInvalidDelivery = errors.New("kms: invalid key delivery")
	// ErrQuota: the KMS refused to create a call: the device has as many
	// running calls as the KMS allows. End some first.
	ErrQuota = errors.New("kms: call quota exceeded")
	// ErrEnded: the call has ended ([Client.EndCall], or its maximum
	// lifetime on the KMS); its keys are no longer delivered.
	ErrEnded = errors.New("kms: call ended")
	// ErrRedirect: the KMS (or something between it and the client)
	// answered with a redirect. The client never follows one; the
	// [RedirectError] names the location.
	ErrRedirect = errors.New("kms: redirect refused")
)

// Reasons a [DeliveryError] gives; each is an error of its own so that tests
// and callers can tell them apart with [errors.Is].
var (
	// ErrAlgorithm: the JWE uses an algorithm outside the allow-list
	// (only ECDH-ES+A256KW key agreement with A256GCM content encryption).
	ErrAlgorithm = errors.New("kms: JWE algorithm not allowed")
	// ErrTampered: the JWE failed authenticated decryption: its protected
	// header, encrypted key, IV, ciphertext or tag was altered.
	ErrTampered = errors.New("kms: JWE failed authentication")
	// ErrWrongRecipient: the JWE is wrapped to another key than this
	// device's.
	ErrWrongRecipient = errors.New("kms: JWE wrapped to another key")
	// ErrBinding: the JWE's protected header does not bind the key URI,
	// call id or version the client asked for, or lacks activation/expiry.
	ErrBinding = errors.New("kms: JWE header does not bind the request")
	// ErrMalformed: the JWE or the response carrying it could not be parsed.
	ErrMalformed = errors.New("kms: malformed response")
	// ErrUnsigned: the JWE opened, but what it carries is not a key
	// delivery signed by a KMS (a bare key, or another kind of object):
	// whoever wrapped it to this device is not known to be the KMS.
	ErrUnsigned = errors.New("kms: key delivery not signed")
	// ErrSigner: the delivery is signed, but not by a pinned KMS signing
	// key ([Config].KMSKeys), or its signature does not verify.
	ErrSigner = errors.New("kms: key delivery signed by an untrusted key")
	// ErrSignedClaims: the KMS's signed claims (URI, call id, version,
	// activation, expiry, recipient device) differ from the envelope that
	// carries them or from this device.
	ErrSignedClaims = errors.New("kms: signed claims do not match the delivery")
)

// DeliveryError reports a wrapped key that the client refused.
type DeliveryError struct {
	// URI is the key URI the client asked for.
	URI string
	// Version is the version refused, 0 when the whole response was.
	Version uint32
	// Reason is one of ErrAlgorithm, ErrTampered, ErrWrongRecipient,
	// ErrBinding, ErrUnsigned, ErrSigner, ErrSignedClaims, ErrBelowMinimum
	// or ErrMalformed.
	Reason error
	// Detail is a human-readable explanation; it never holds key material.
	Detail string
}

// Error describes the refusal.
func (e *DeliveryError) Error() string {
	s := fmt.Sprintf("kms: key %q version %d refused: %v", e.URI, e.Version, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the reason and ErrInvalidDelivery.
func (e *DeliveryError) Unwrap() []error { return []error{e.Reason, ErrInvalidDelivery} }

// RedirectError reports a 3xx response, which the client refuses: it never
// sends a request, and so never its certificate, token or proof, to another
// location than its configured KMS URL.
type RedirectError struct {
	// Op names the client operation, for example "fetch".
	Op string
	// Status is the HTTP status code.
	Status int
	// Location is the redirect's Location header, as received (at most
	// 256 bytes), empty if there was none.
	Location string
}

// Error describes the refused redirect.
func (e *RedirectError) Error() string {
	return fmt.Sprintf("kms: %s: %d redirect to %q refused", e.Op, e.Status, e.Location)
}

// Unwrap returns [ErrRedirect].
func (e *RedirectError) Unwrap() error { return ErrRedirect }

// ServerError is an error response from the KMS.
type ServerError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the KMS's machine-readable code, for example
	// "certificate_expired", "token_expired", "unknown_authority",
	// "compromised", "destroyed", "replayed", "device_revoked".
	Code string
	// Op names the client operation, for example "fetch".
	Op string
}

// Error describes the response.
func (e *ServerError) Error() string {
	return fmt.Sprintf("kms: %s: %d %s", e.Op, e.Status, e.Code)
}

// Is maps the response onto the package's sentinel errors.
func (e *ServerError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized && e.Code != wire.CodeReplayed && e.Code != wire.CodeStaleProof
	case ErrReplayed:
		return e.Code == wire.CodeReplayed || e.Code == wire.CodeStaleProof
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrDeviceRevoked:
		return e.Code == wire.CodeDeviceRevoked
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrRevoked:
		return e.Code == wire.CodeCompromised || e.Code == wire.CodeDestroyed
	case ErrBelowMinimum:
		return e.Code == wire.CodeBelowMinimum
	case ErrExpired:
		return e.Code == wire.CodeExpired
	case ErrEnded:
		return e.Code == wire.CodeEnded
	case ErrUnavailable:
		return e.Status >= 500 || (e.Status == http.StatusTooManyRequests && e.Code != wire.CodeQuota)
	case ErrQuota:
		return e.Code == wire.CodeQuota
	}
	return false
}

// permanent reports whether retrying err cannot help.
func permanent(err error) bool {
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrForbidden) || errors.Is(err, ErrDeviceRevoked) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrRevoked) || errors.Is(err, ErrInvalidDelivery) || errors.Is(err, ErrBelowMinimum) ||
		errors.Is(err, ErrExpired) || errors.Is(err, ErrRedirect) || errors.Is(err, ErrEnded) || errors.Is(err, ErrQuota)
}

// invalidKeyURI is ErrInvalidKeyURI, which is ErrNotFound as well.
type invalidKeyURI struct{}

func (invalidKeyURI) Error() string { return "kms: invalid key URI" }

func (invalidKeyURI) Is(target error) bool { return target == ErrNotFound }
