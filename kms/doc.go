// Package kms fetches call keys from a key management service: it holds the
// [Client] the SDK uses to fetch, cache and follow rotations of call keys,
// and the wire types devices need. The reference KMS (an [net/http.Handler]
// with an embedded file store and a hash-chained audit log) is package
// [github.com/securecall/securecall/kms/kmsserver]; an application that
// only fetches keys links neither it nor its store.
//
// # Model
//
// A device has an identity (the common name of its certificate for mutual
// TLS, or "token:" and the subject of a bearer JWT: the two kinds never
// name the same device) and a P-256 key pair; it registers
// the public key ([Client.Register]). A call is a resource created by a
// device ([Client.CreateCall]) with a list of participant identities; its
// key is versioned (1, 2, ...) and each version has a state (pre-active,
// active, deactivated, compromised, destroyed), an activation time and an
// expiry, after Vault's transit keys and KMIP. A call has a minimum usable
// version, which the KMS operator raises.
//
// Keys rotate on a schedule ([CallOptions].RotateEvery), on demand
// ([Client.Rotate]) and at once when a participant is removed
// ([Client.RemoveParticipant]). A new version activates after the KMS's
// activation delay so that receivers install it before senders switch; the
// version it supersedes stays deliverable for a grace period after that.
//
// A participant fetches the usable versions ([Client.Fetch], which is also
// [media.KeySource.Keys]) and follows new ones by long-poll ([Client.Watch],
// [media.KeyWatcher]); [Client.WatchChanges] ([media.KeyChangeWatcher],
// what a media session uses) also reports, in the same long-poll and as
// soon as the operator acts, the versions the KMS withdraws: compromised,
// destroyed or below a raised minimum. Every version arrives signed, then encrypted: a
// compact JWS (ES256, by the KMS's signing key) over the key, its URI, call
// id, version, activation, expiry and the recipient device key, inside a
// compact JWE wrapped to the device's registered key (ECDH-ES+A256KW,
// A256GCM) whose protected header repeats the binding. The client pins the
// KMS's signing keys ([Config].KMSKeys) and checks the signature and that
// the signed claims equal the envelope and the request.
// The key URI is https://kms-host/v1/calls/{id}: it names the key and carries
// nothing secret, so the SDP can carry it. Since it comes from the signaling
// path, the client takes only a URI under one of its configured KMS addresses
// whose id is 1 to 128 of URL's unreserved characters (A-Z a-z 0-9 - . _ ~)
// and not "." or ".."; any other is refused with [ErrInvalidKeyURI] (which
// is [ErrNotFound] too) before a request is sent, and its error quotes at
// most the URI's first 96 bytes.
//
// A call ends when its creator ends it ([Client.EndCall]) or at the KMS's
// maximum call lifetime: it rotates no more, its keys are never delivered
// again ([ErrEnded]) and the KMS destroys them after its retention.
//
// The protocol is HTTPS with JSON bodies:
//
//	POST   /v1/devices                          register the device key (proof)
//	POST   /v1/calls                            create a call key       (proof)
//	GET    /v1/calls/{id}/keys[?after=N&wait=ms] usable versions; long-poll with wait
//	       [&withdrawn=N]                       ... answered too when the withdrawn count changes
//	GET    /v1/calls/{id}/keys?version=N        one version
//	POST   /v1/calls/{id}/rotate                new version             (proof)
//	DELETE /v1/calls/{id}/participants/{who}    remove and rotate       (proof; who path-escaped)
//	POST   /v1/calls/{id}/end                   end the call            (proof)
//
// Requests marked (proof) change state and carry a proof of freshness in
// the Securecall-Proof header: a JWS (ES256) by the device key over the
// audience (the origin, https://host[:port], of the [Config].URL or
// [Config].URLs entry the request is sent to), the method, path, body
// hash, a random nonce and the time; the server refuses a replayed or
// stale one, and one for another KMS (see package kmsserver). The
// audience is a protected header parameter, so that a KMS of a release
// before it, which checks no audience and refuses unknown claims, accepts
// these proofs too: devices may upgrade before their KMS. A request
// refused as stale is signed afresh and sent once more (the reference KMS
// also refuses as stale the older proofs of a device that filled its
// replay memory).
//
// # Security
//
// What each party can and cannot do:
//
//   - A network attacker sees TLS only. Keys are wrapped to the device key
//     inside TLS as well, so even a TLS-terminating hop (an inspection
//     proxy, a load balancer) sees JWEs, not keys. Such a hop also sees
//     every device's public key at registration and could wrap a key of
//     its own to it; it cannot sign one. The client refuses any delivery
//     whose JWE fails authentication ([ErrTampered]), is wrapped to another
//     key ([ErrWrongRecipient]), uses an algorithm outside its allow-list
//     ([ErrAlgorithm]), binds another URI, call or version ([ErrBinding]),
//     carries no KMS signature ([ErrUnsigned]), is signed by a key that is
//     not pinned or does not verify ([ErrSigner]), whose signed claims
//     differ from the envelope or name another recipient device
//     ([ErrSignedClaims]: a genuine signature moved to another call,
//     version, time or device), or lies below the call's minimum
//     ([ErrBelowMinimum]); each is a [*DeliveryError]. A replayed
//     state-changing request is refused (ErrReplayed on the wire: 401
//     "replayed"), and so is one replayed at another KMS where the device
//     key is registered too (a second deployment, or a hop in front of
//     one): its proof names the KMS it was made for (401 "bad_proof").
//     A hop can still deny service and see who fetches which call when.
//   - The KMS signing key (P-256) is created at the server's first start,
//     sealed under the KEK in the store like key material, and survives
//     restarts. The server publishes two public keys, the current one and
//     the next one (kmsserver's Server.SigningKeysJWKS; [ParseKMSKeys]
//     reads it); devices pin both. Server.RotateSigningKey makes the next key
//     current and creates a new next key, so the keys a device pinned
//     before a rotation still verify after it, and must be refreshed
//     before the rotation after that: the overlap is the time between two
//     rotations. Signatures name their key in the JWS kid (its RFC 7638
//     thumbprint). Pinning is the trust anchor: deliver the keys to
//     devices the way the device certificates are delivered, never over
//     the path they protect.
//   - The client never follows an HTTP redirect: a 3xx is a
//     [*RedirectError] ([ErrRedirect]) naming the location, so no request,
//     and no certificate, token or proof, goes to another host than
//     [Config].URL and [Config].URLs. The client's own transport ignores proxy settings from
//     the environment.
//   - A device that is not a participant gets 403 and nothing else, and the
//     denial is audited. A removed participant keeps the versions it
//     already had (it had them) but can never fetch a later one: removal
//     rotates in the same commit that removes it.
//   - A stolen device certificate and key, or a stolen bearer token with its
//     device key, act as that device until the certificate or token expires,
//     the CA stops trusting it, or the KMS operator revokes the device
//     (kmsserver's Server.RevokeDevice): they can fetch the keys of that
//     device's calls. A revoked device gets [ErrDeviceRevoked] (403
//     "device_revoked") for every request, its watches end, it is never
//     retried nor sent to another replica, and its calls rotate, so the
//     keys it holds protect only media sent before the new versions
//     activate. They cannot fetch other devices' calls. A stolen token alone
//     (without the device key) cannot open deliveries and cannot sign
//     proofs, but it can register a new device key for its subject; keep
//     tokens short-lived. Device certificates must carry P-256 keys, and
//     with mutual TLS the registered key must be the certificate's.
//   - The KMS operator can read every key; with hybrid keying (see package
//     media) a KMS operator alone still cannot decrypt recorded media,
//     because the DTLS exporter (ECDHE) is mixed in. What the store and
//     the audit log protect is described in package kmsserver.
//   - The client never sends credentials to a URI from signaling that is
//     not under its configured KMS URL or URLs (such URIs fail with
//     [ErrNotFound]).
//   - Several KMS replicas: with [Config].URLs the client sends each
//     request to the address that answered last and, on a connection
//     error or a 5xx, tries the next ones once each, in order. A state
//     change (anything but a fetch) whose connection broke after it was
//     sent is not repeated elsewhere, since it may have been done; its
//     caller sees [ErrUnavailable]. Watch keeps its backoff between
//     rounds, and concurrent fetches still share one request.
//     Keys, tokens and private keys are never logged; [media.CallKey] and
//     [Config] print redacted.
//
// # Concurrency
//
// [Client] is safe for concurrent use. Concurrent
// [Client.Fetch] calls for one URI share one request. [Client.Watch] (and
// [Client.WatchChanges]) calls its function on the goroutine that called
// it, never concurrently, and
// returns when its context is done, when the client closes, or on a
// permanent error ([ErrUnauthorized], [ErrForbidden], [ErrDeviceRevoked],
// [ErrNotFound], [ErrRevoked], [ErrEnded], [ErrRedirect],
// [ErrInvalidDelivery]); transient
// errors are retried with exponential backoff and full jitter ([Backoff]).
// While the KMS is unreachable, Fetch serves the last keys it fetched that
// have not expired by [Config].Clock (default time.Now). After a 429 for its request rate the client sends
// nothing before its Retry-After (at most a minute) has passed.
//
// The client's cache of keys is bounded: [Config].MaxCachedCalls calls
// (default 1,024; the least recently fetched goes first), and a call's
// entry is wiped when the call ends, when a fetch or watch meets a
// permanent error, and on [Client.Release]. A version the KMS reports
// revoked, expired or below the call's minimum ([Client.FetchVersion]) is
// wiped at once and never served from the cache or cached again, even
// from a response the KMS sent before. Key material the client lets go of
// is wiped (zeroed), never left to the collector: besides the above, a
// version a later fetch replaces, an evicted call, the cache on
// [Client.Close], a shared fetch's keys once every waiter has its copy, a
// refused delivery's keys, and keys expired by [Config].Clock, the next
// time a fetch lands or keys are served from the cache (an idle client
// holds them until then). Keys handed to the caller (Fetch's result,
// FetchVersion's, Watch's function's argument) are the caller's own
// copies and never wiped by the client.
//
// A fetch that repeats costs no key agreement: opened keys are cached per
// JWE on the client (and wrapped keys per device key on the reference
// server).
//
// # Performance
//
// Measured on this project's shared 2-core machine (AMD EPYC, Go 1.26, go
// test -bench 'FetchWarm|ServerThroughput' -benchtime 2s -count 3 ./kms),
// client and server in one process, every limit of the server on the path
// (the benchmark's request bucket set above what its devices ask), signed
// deliveries, authenticated store records, against the code before them
// (7a67b0e) run just before, load average 4 to 7 from other builds:
//
//	                           before (7a67b0e)          after
//	BenchmarkFetchWarm p50     47-49 µs                  52-56 µs      (goal: <= 0.5 ms)
//	BenchmarkFetchWarm p99     0.42-0.49 ms              0.48-0.52 ms
//	BenchmarkServerThroughput  15,400-16,900 fetches/s   13,600-14,700 fetches/s (goal: >= 5,000)
//
// About a tenth of the throughput goes to larger deliveries (a JWS inside
// each JWE), the limiters and the MAC of every audit record. Under heavier
// load (load average 6 to 9) both trees gave 2,700-7,700 fetches/s. Warm
// fetches reuse wrapped (signed) deliveries on the server and opened keys
// on the client, as a device re-fetching a call's keys does; a fresh
// delivery costs one ES256 signature and one ECDH-ES wrap on the server,
// one verification and one unwrap on the client.
package kms
