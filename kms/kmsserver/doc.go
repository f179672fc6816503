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
// and raises a call's minimum version ([Server.SetMinVersion]). Marking
// the newest version makes a new one in the same commit, so that live
// calls have a version to move to; every watch that tracks withdrawals
// (kms.Client.WatchChanges) is answered at once, on every replica, and its
// session stops sending and receiving under the withdrawn versions.
//
// The operator revokes a device, a lost or stolen one whose credentials
// are still valid ([Server.RevokeDevice]; [Server.RestoreDevice] lifts
// it). From when RevokeDevice returns, every request of that identity is
// refused with 403 "device_revoked" (kms.ErrDeviceRevoked), whatever it
// asks: register, create, fetch, watch, rotate, remove, end. The check
// comes right after authentication, so a caller that cannot authenticate
// as an identity learns nothing about whether it is revoked, and before
// any other work. Each request holds a gate of its identity from that
// check to the end of what it decides (its commit, or the response that
// delivers keys), and RevokeDevice closes the gate while it commits: it
// waits for the device's requests in progress (at most a request's
// write timeout; watches let go of the gate while they wait), and none
// of them completes anything after it returns. Running watches of the
// device end at once. Then every running call the identity created or is
// a participant of rotates, as a removal does (rotate entries, actor
// operator, Detail "revoked <identity>"), and RevokeDevice returns once
// they have; a server that stopped before rotating them rotates them at
// its next start. What revocation cannot undo: the versions the device
// already had still open whatever was sent under them, which includes
// media sent until the new versions activate (ActivationDelay after
// RevokeDevice) and any recording of it. A revocation is idempotent
// (revoking a revoked identity, or restoring one that is not, changes
// nothing, writes no audit entry, and returns nil), bounded
// ([Config].MaxRevokedDevices), and validated: an identity that could not
// be a participant's ([ErrInvalidIdentity]) changes nothing.
//
// Every delivery is signed by the KMS's signing key, then encrypted to the
// device key (see package kms). The signing keys are created at the first
// start and sealed in the store; [Server.SigningKeys] and
// [Server.SigningKeysJWKS] publish the current and the next key, which
// devices pin, and [Server.RotateSigningKey] moves to the next.
//
// Identities: a certificate's common name (which may not contain ':') or,
// for a bearer token, [TokenIdentityPrefix] and the token's subject
// ("token:alice"), so the two kinds never name the same device. Participant
// lists use these identities.
//
// State-changing requests carry a proof of freshness (a JWS by the device
// key over the audience, the method, path, body hash, a nonce of 16 to 64
// bytes and the time; the audience is the protected header parameter
// "sc-aud", not a claim, because servers before it refuse unknown claims
// and must go on accepting the proofs of upgraded devices). The server refuses a proof it has seen, one older
// than [Config].FreshnessWindow, one dated more than [Config].MaxClockSkew
// ahead, and one for another KMS (401 bad_proof): the audience is the
// origin the device sent the request to, and must be [Config].BaseURL's
// or one of [Config].Aliases. Without a BaseURL the request's Host is
// accepted as the audience; the sender picks the Host, so a proof
// captured on its way to another KMS could be replayed here with that
// Host: set BaseURL wherever devices also talk to another KMS. Proofs
// without audience (clients before it) are accepted unless
// [Config].RequireProofAudience. The nonce of a proof that changed state
// is stored in the same commit as the change, so its replay is refused
// after a restart too.
//
// The replay memory holds [Config].MaxNonces nonces. When it is full, the
// device holding the most loses its oldest one, and that device's floor
// rises to the nonce's time: its proofs dated at or before the floor are
// refused as stale (the client signs a fresh one and sends it again), so
// a nonce let go of can never be replayed. A device flooding the memory
// pushes out its own proofs; no set of devices holds back another's state
// changes. The store keeps every stored nonce until its window ends (the
// scheduler deletes the ones the memory let go of), and a restart loads
// them, oldest first, through the same bound, so the floors rise again as
// needed. On a [SharedStore] every nonce is also checked against the
// database, so a nonce one replica let go of is still refused on all.
//
// # Calls end
//
// A call ends when its creator ends it (POST /v1/calls/{id}/end,
// kms.Client.EndCall, or [Server.EndCall]) or [Config].MaxCallLifetime
// (default 24 h) after its creation. An ended call rotates no more and
// delivers no key (410 "ended"; its watches end); [Config].EndedRetention
// (default 1 h) later its record and sealed keys are purged from the
// store and wiped from memory. Every end and purge is audited.
//
// # Limits
//
// Each has a [Config] field and a default:
//
//	requests per device     token bucket, 50/s, burst 100     429 rate_limited, Retry-After
//	failed authentications  10/s per remote address, burst 50 429 before verifying new credentials
//	running calls           100 per creating device           429 quota_exceeded
//	concurrent watches      1,024 per device (one per call)   429 too_many_watches
//	on-demand rotations     60 per minute per call, burst 6   429 rotation_rate_limited, Retry-After
//	rotation schedule       at least 1 s                      400 bad_request
//	versions per response   the newest 64
//	participants            1,024 per call, identities of at most 256 bytes
//	revoked devices         100,000 at once                   ErrTooManyRevoked (operator)
//	proof nonces            16 to 64 bytes; 100,000 remembered, then the
//	                        device holding the most loses its oldest (see
//	                        Model): its proofs dated at or before it get
//	                        401 stale_proof, and no other device waits
//	proof time              at most 5 s ahead, 1 min old
//	request bodies          1 MiB; headers 32 KiB; call ids in paths 22 characters
//	audit of denials        aggregated per 10 s (see below)
//	HTTP (Server.HTTPServer) read header 5 s, read 10 s, write 10 s (a
//	                        long-poll: its wait plus 10 s), idle 30 s;
//	                        Server.LimitListener: 512 connections;
//	                        a 401 closes its connection
//
// Serve the KMS with [Server.HTTPServer] on [Server.LimitListener] (as
// internal/devkms and examples/kms-server do); a plain http.Server has none
// of the HTTP limits.
//
// Every decision (register, create, fetch, watch, rotate, remove, end,
// purge, state, min-version, revoke, restore, signing-key; granted or
// denied) is appended to
// a hash-chained audit log; [Server.ExportAuditLog] writes it and
// [VerifyAuditLog] checks it. Every field of an entry is bounded (a call id
// that is not one this server could have made is recorded as
// "(malformed)"). Denials are aggregated, not written one by one, so that
// no client, authenticated or not, drives an fsync or disk growth per
// request: each [Config].DenialInterval yields at most one entry per
// (action, identity, call, reason), whose Detail counts them ("forbidden
// x37 since ..."), and at most 1,024 such entries, the rest counted in one.
// Granted fetches are audited one by one (each device's request bucket
// bounds them). The log stays bounded in the store: every hour the server
// removes entries older than [Config].AuditRetention (default 30 days;
// [Server.CompactAudit]), leaving a checkpoint record (the last removed
// entry's hash, and which entry last wrote each record it vouches for) and
// an audited "compact" entry, so the rest of the chain still verifies and
// the store's records are still checked against it.
//
// # Store
//
// [Store] is the seam for other databases: four methods (Get, ForEach,
// Commit, Close), values opaque bytes, the server its only writer. Package
// kmsserver/storetest holds the conformance tests every Store must pass.
//
// Durability: every state change (registration, call, version, state,
// end, purge, revocation, signing key) is committed with its audit entry in one fsynced transaction
// before the request is answered, so a crash loses nothing that was
// acknowledged. Fetch entries are committed asynchronously by the same
// group commit, normally within milliseconds, and aggregated denials every
// DenialInterval (and on [Server.Flush]); a crash can lose the last of
// them.
//
// Revocations are records of the bucket "revoked" (one per identity,
// deleted on restoration), authenticated and checked at start like every
// other record, and vouched for by audit checkpoints. A server of the
// release before them does not know the bucket: on a store that holds
// revocations it starts and ignores them, so a rollback to it silently
// lifts every revocation while it runs, unless a compaction has removed
// a revocation's audit entry, in which case the older server refuses to
// start (the checkpoint names a record it does not load: "missing").
// Rolling forward again restores them; but if the older server
// compacted the log meanwhile, its checkpoint does not vouch for the
// revocation records and this release refuses to start ("no audit entry
// wrote it") until those records are removed (and the devices revoked
// again). Do not roll back past this release while devices are revoked.
//
// # Deployment
//
// One process on the file store is the embedded default. For high
// availability run several replicas on PostgreSQL (package
// kmsserver/pgstore; a [SharedStore]): any replica serves any request, and
// a replica that dies loses nothing, because nothing is acknowledged
// before it is committed to the database.
//
//   - Put the replicas behind a load balancer (TCP or TLS passthrough:
//     devices present their certificates to the replica itself) or
//     behind one DNS name with several addresses, or list each replica in
//     the devices'
//     kms.Config.URLs; the client fails over on connection errors and
//     5xx. Give every replica the same [Config].BaseURL (the name devices
//     use): key URIs, and the binding of every delivered key, carry it.
//     Devices that list each replica sign their proofs for the address
//     they send to: list those addresses in [Config].Aliases.
//     Every replica needs the same KEK and trusts the same device CA.
//   - Across replicas: commits are serialised on the audit chain head
//     (one transaction each, holding an advisory lock), so the log is one
//     hash chain; a change computed from a record another replica changed
//     meanwhile is refused ([ErrConflict]: on-demand requests get 503 and
//     the client retries elsewhere, the scheduler skips it) and the record
//     is read again, so each scheduled rotation happens once, and every
//     replica's scheduler covers every call, so a dead replica's calls go
//     on rotating. A replica follows the others' commits by LISTEN/NOTIFY
//     (about a millisecond on loopback) and reads everything again after
//     a lost connection; a record it does not hold yet (a call just
//     created elsewhere) is read from the database on demand. Proof
//     nonces are shared: a proof used on one replica is refused on all.
//     Audit compaction runs in the same locked transaction from the
//     database's own records.
//   - Revocations across replicas: a state change a revoked device asks
//     of any replica is refused in its commit (the transaction reads the
//     device's revocation), from the moment the revocation committed. A
//     fetch or watch, which commits nothing, is refused once the replica
//     has followed the revocation (about a millisecond on loopback; after
//     a lost connection, once it has read everything again, revocations
//     first and last). A replica follows the revocation before the
//     rotations it causes, which commit after it, so no replica delivers
//     the new versions to the revoked device. RevokeDevice on one replica
//     waits only for the device's requests in progress on that replica.
//     The bound is counted by each replica from what it holds.
//   - Limits per replica: the request bucket, the watch count, the
//     on-demand rotation bucket, the running-call quota and the nonce
//     memory are counted by each replica alone, so with N replicas behind
//     a balancer a device can get up to N times each. The limits that
//     protect the database hold as they are: what reaches it is bounded by
//     these per request, and versions per response, participants, sizes
//     and the minimum rotation schedule are properties of each record.
//   - Backups: back up the database as any other (pg_dump, or base backups
//     with WAL archiving). A restored backup is consistent with its own
//     audit log and starts; it is a rollback, detectable only against an
//     [AuditHead] kept elsewhere (export it regularly). Keep the KEK out
//     of the database and its backups: it is what makes them harmless.
//   - A stolen database or backup (without the KEK) gives what a stolen
//     store file gives (see Security): identities, participants, times
//     and the audit log, no key and no signing key; a writer without the
//     KEK can delete or roll back (denial of service), not grant.
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
//   - Someone who can write the store file but has not the KEK cannot
//     change what the server grants: every record (device, call, revocation,
//     signing keys, audit entry, audit head, nonce) carries an HMAC-SHA256 under a
//     key derived from the KEK over its bucket, key, value and the
//     sequence number of the audit entry written with it. At start the
//     server checks every MAC, the whole audit chain, that the head is the
//     chain's end, that each record was written by the last audit entry
//     that changed it (an older copy put back is refused) and that every
//     record the log says exists is there (a deleted one is refused); the
//     [*RecordError] names the record. What remains: the whole file
//     replaced by an older copy of itself is consistent, and is caught
//     only by comparing with an [AuditHead] kept elsewhere.
//   - A damaged file (truncated, a page altered) fails [OpenFileStore]
//     with an error naming it ([ErrDamagedStore]); the server never
//     panics or faults on it.
//   - The audit log detects rewriting, removal and reordering of entries;
//     truncation at the end is detected by comparing with a previously kept
//     [AuditHead].
//   - A device that is not a participant gets 403 and nothing else, and the
//     denial is audited. A removed participant keeps the versions it
//     already had but can never fetch a later one: removal rotates in the
//     same commit that removes it.
//   - A stolen device certificate and key, or a stolen bearer token with its
//     device key, act as that device until the certificate or token expires,
//     the CA stops trusting it, or the operator revokes it
//     ([Server.RevokeDevice]; see Model). A stolen token alone cannot open
//     deliveries or sign proofs, but it can register a new device key for
//     its subject; keep tokens short-lived. With mutual TLS the registered
//     key must be the certificate's.
//   - Key material, tokens and private keys are never logged.
//
// # Concurrency
//
// [Server] is safe for concurrent use. It owns two goroutines (three on a
// [SharedStore], which adds the follower of other replicas' changes),
// joined by [Server.Close]: a store writer (group commit: it batches whatever is
// queued into one transaction) and a scheduler (rotations, ends at the
// maximum lifetime, purges, denial flushes). State changes are
// serialized; fetches are not, and a fetch that repeats costs no key
// agreement: wrapped keys are cached per device key and binding.
//
// Every decision reads [Config].Clock, and the scheduler sleeps on
// [Config].WakeAt; both default to real time. Tests that run the server
// over a real network set both to one fake clock and advance it, so that
// scheduled rotation, activation, expiry and retention need no waiting.
package kmsserver
