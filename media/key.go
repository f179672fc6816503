package media

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// CallKeySize is the size in bytes of a call key from a key source.
const CallKeySize = 32

// CallKey is one version of a call's key, as a key management service
// delivers it. It is the input of the key schedule in kms and hybrid keying;
// SRTP master keys are derived from it per sender and never equal it.
//
// A CallKey prints redacted: String, GoString and LogValue never show Key.
type CallKey struct {
	// URI names the call's key resource; it is what the SDP carries.
	URI string
	// CallID is the call the key belongs to. It salts the key schedule.
	CallID string
	// Version numbers the key from 1; it is the SRTP MKI on the wire.
	Version uint32
	// Key is the secret, CallKeySize bytes.
	Key []byte
	// ActivateAt is when senders switch to this version. Receivers install
	// it as soon as they learn of it.
	ActivateAt time.Time
	// ExpiresAt is when the version must no longer be used; zero means it
	// does not expire on its own.
	ExpiresAt time.Time
}

// String returns a description of k without its secret.
func (k CallKey) String() string {
	return fmt.Sprintf("CallKey{URI: %q, CallID: %q, Version: %d, Key: [REDACTED], ActivateAt: %s, ExpiresAt: %s}",
		k.URI, k.CallID, k.Version, k.ActivateAt.UTC().Format(time.RFC3339), k.ExpiresAt.UTC().Format(time.RFC3339))
}

// GoString is like String, so that %#v does not reveal the secret either.
func (k CallKey) GoString() string { return k.String() }

// LogValue implements [slog.LogValuer]; the secret is never logged.
func (k CallKey) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("uri", k.URI),
		slog.String("call_id", k.CallID),
		slog.Any("version", k.Version),
		slog.Time("activate_at", k.ActivateAt),
		slog.Time("expires_at", k.ExpiresAt),
	)
}

// KeySource supplies call keys for kms and hybrid keying. The kms package's
// Client implements it; an application may plug in its own KMS.
type KeySource interface {
	// Keys returns the usable versions of the call key named by uri, in
	// ascending version order.
	Keys(ctx context.Context, uri string) ([]CallKey, error)
}

// KeyWatcher is an optional ability of a [KeySource], detected by type
// assertion: a source that implements it reports new versions while a call
// is up, so that keys rotate without the application doing anything.
type KeyWatcher interface {
	// Watch calls fn with each version of the key named by uri that is
	// newer than the newest one it has reported, in ascending order, from
	// one goroutine, never concurrently. It blocks until ctx is done, when
	// it returns ctx.Err() wrapped, or until watching can no longer
	// succeed (for example because access was revoked), when it returns
	// that error.
	Watch(ctx context.Context, uri string, fn func(CallKey)) error
}

// KeyChange is what a [KeyChangeWatcher] reports: a new version of the
// call key, or versions the key source withdrew.
type KeyChange struct {
	// Key is a new version, as Watch reports it; its Version is 0 in a
	// change that only withdraws.
	Key CallKey
	// Revoked lists withdrawn versions (compromised or destroyed).
	Revoked []uint32
	// MinVersion, above 1, withdraws every version below it.
	MinVersion uint32
}

// KeyChangeWatcher is an optional ability of a [KeySource], detected by
// type assertion and preferred to [KeyWatcher]: a source that implements it
// also reports the versions it withdraws while a call is up, and a session
// stops sending and receiving under them at once (see [Session.RevokeKey]),
// without waiting for its peer to move on or for RotationGrace. A session
// whose source implements both watches through WatchChanges only, so a
// wrapper that changes what Watch reports must wrap WatchChanges as well.
// kms.Client implements it.
type KeyChangeWatcher interface {
	// WatchChanges is Watch, calling fn with KeyChange.Key set for each
	// new version, and also with Revoked and MinVersion each time the
	// versions withdrawn change. fn runs on one goroutine, never
	// concurrently.
	WatchChanges(ctx context.Context, uri string, fn func(KeyChange)) error
}

// KeyFetcher is an optional ability of a [KeySource], detected by type
// assertion: a source that implements it fetches one version on demand. A
// session whose peer sends under a version newer than any it holds (the
// peer's watch learnt of a rotation first, say after a KMS outage) fetches
// that version at once instead of waiting for its own watch, and holds the
// packets meanwhile (see [HeldPacketLimit]). kms.Client implements it.
type KeyFetcher interface {
	// FetchVersion returns version of the call key named by uri.
	FetchVersion(ctx context.Context, uri string, version uint32) (CallKey, error)
}

// KeyRotator is an optional ability of a [KeySource], detected by type
// assertion: a source that implements it makes a new version of the call
// key on request. A session whose sending key nears Config.MaxPackets or
// Config.KeyLifetime asks it for a rotation itself, once per key version,
// before it calls Config.OnRotationNeeded. kms.Client implements it.
type KeyRotator interface {
	// Rotate makes a new version of the call key named by uri and returns
	// its number.
	Rotate(ctx context.Context, uri string) (uint32, error)
}
