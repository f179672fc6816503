// Package kmsserver is the reference KMS: a [Server] ([net/http.Handler])
// that speaks the protocol of package [github.com/securecall/securecall/kms]'s
// client, with an embedded file [Store] (bbolt), a hash-chained audit log and
// a rotation scheduler. It links nothing of the media stack.
//
// # Model
//
// Devices authenticate with mutual TLS (the certificate's common name is the
// identity) or a bearer JWT (its subject) and register a P-256 key. A call
// is a resource with a creator and participants; its key is versioned and
// each version has a [KeyState], an activation time and an expiry. Keys
// rotate on a schedule, on demand, and at once when a participant is
// removed. A new version activates after [Config].ActivationDelay; the one
// it supersedes stays deliverable for [Config].Grace after that. The
// operator marks versions compromised or destroyed ([Server.SetKeyState])
// and raises a call's minimum version ([Server.SetMinVersion]).
//
// Every delivery is signed by the KMS's signing key, then encrypted to the
// device key (see package kms). The signing keys are created at the first
// start and sealed in the store; [Server.SigningKeys] and
// [Server.SigningKeysJWKS] publish the current and the next key, which
// devices pin, and [Server.RotateSigningKey] moves to the next.
//
// State-changing requests carry a proof of freshness (a JWS by the device
// key over the method, path, body hash, a nonce and the time). The server
// refuses a proof it has seen, one older than [Config].FreshnessWindow, and
// one signed before the server started (the nonce memory is not persisted).
//
// Every decision (register, create, fetch, watch, rotate, remove, state,
// min-version, signing-key; granted or denied) is appended to a
// hash-chained audit log; [Server.ExportAuditLog] writes it and
// [VerifyAuditLog] checks it.
//
// # Store
//
// [Store] is the seam for other databases: four methods (Get, ForEach,
// Commit, Close), values opaque bytes, the server its only writer. Package
// kmsserver/storetest holds the conformance tests every Store must pass.
//
// Durability: every state change (registration, call, version, state,
// signing key) is committed with its audit entry in one fsynced transaction
// before the request is answered, so a crash loses nothing that was
// acknowledged. Fetch and denial entries are committed asynchronously by
// the same group commit, normally within milliseconds; a crash can lose the
// last of them.
//
// # Security
//
//   - The operator can read every key: the server unwraps keys from the
//     store to wrap them to devices. That is the point of a customer-held
//     KMS: the customer, not the SDK vendor or the signaling provider, is
//     the operator.
//   - Someone with the store file but not the KEK learns identities,
//     participants and times, not keys, and cannot sign deliveries: key
//     versions and the signing keys are sealed with AES-256-GCM under the
//     KEK. Without the right KEK the server refuses to start.
//   - The audit log detects rewriting, removal and reordering of entries;
//     truncation at the end is detected by comparing with a previously kept
//     [AuditHead].
//   - A device that is not a participant gets 403 and nothing else, and the
//     denial is audited. A removed participant keeps the versions it
//     already had but can never fetch a later one: removal rotates in the
//     same commit that removes it.
//   - A stolen device certificate and key, or a stolen bearer token with its
//     device key, act as that device until the certificate or token expires
//     or the CA stops trusting it. A stolen token alone cannot open
//     deliveries or sign proofs, but it can register a new device key for
//     its subject; keep tokens short-lived. With mutual TLS the registered
//     key must be the certificate's.
//   - Key material, tokens and private keys are never logged.
//
// # Concurrency
//
// [Server] is safe for concurrent use. It owns two goroutines, joined by
// [Server.Close]: a store writer (group commit: it batches whatever is
// queued into one transaction) and a rotation scheduler. State changes are
// serialized; fetches are not, and a fetch that repeats costs no key
// agreement: wrapped keys are cached per device key and binding.
package kmsserver
