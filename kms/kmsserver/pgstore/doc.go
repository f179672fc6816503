// Package pgstore keeps the reference KMS's state in PostgreSQL, so that
// several [kmsserver.Server] replicas can serve one KMS: any replica
// serves any request, and losing one loses no key.
//
//	store, err := pgstore.Open(ctx, "postgres://kms@db.internal/kms")
//	...
//	srv, err := kmsserver.New(kmsserver.Config{Store: store, KEK: kek})
//
// It lives apart from kmsserver so that a server on the embedded file
// store does not link the PostgreSQL driver.
//
// # Schema
//
// Open creates the schema, or migrates it to [SchemaVersion], in one
// transaction under an advisory lock, so replicas starting together
// migrate once; a database with a newer schema is refused ([ErrSchema]).
// Three tables: securecall_kms_schema (the version),
// securecall_kms_records (bucket, key, value: the server's records, each
// already sealed and authenticated under the KEK exactly as in the file
// store) and securecall_kms_nonces (proof nonces until they expire).
//
// # Replicas
//
// Every commit is one transaction holding one advisory lock, which
// serialises commits across replicas on the audit chain head: the
// server reads the head inside the transaction, so the audit log stays
// one hash chain; a state change and its audit entry commit together. The
// server checks inside the same transaction that every record it changes
// is the one it computed the change from, and otherwise refuses the change
// ([kmsserver.ErrConflict]) and reads the record again; this is how a
// rotation due on every replica happens exactly once, and how a replica
// that died mid-rotation is covered by the others (their schedulers hold
// every call). Each commit notifies (LISTEN/NOTIFY, channel
// securecall_kms) the records it changed; every replica follows them, so a
// watch on one replica wakes when another creates a version. After a lost
// listening connection the store reconnects and the server reads every
// record again, so nothing committed meanwhile is missed.
//
// Proof nonces are inserted into securecall_kms_nonces: a proof used on
// one replica is refused on every other. Expired nonces are deleted at
// most once a minute.
//
// # Measured
//
// On a shared, loaded 2-core machine with the clients, the replicas and
// PostgreSQL on the same cores (benchmarks BenchmarkInteropPostgres*, one
// run): warm fetch p50 64 µs, p99 0.7-2.6 ms, with 1 to 3 replicas (the
// file store in the same run: 60 µs); 16 devices fetching in parallel
// 2,700-7,300 fetches/s in total (file store 4,100/s); on-demand
// rotations 350-610/s (file store 1,300/s); a version created on one
// replica reaches a watch on another in 0.85 ms p50, 3.5 ms p99.
//
// A second run on the same machine when it was quiet (load average 1.5 to
// 2, `go test -bench 'BenchmarkInteropPostgres(FetchWarm|Throughput)'
// -benchtime 2s` with SECURECALL_INTEROP=1):
//
//	                     warm fetch p50/p99   fetches/s total   per replica
//	file store (bbolt)   65 µs / 0.61 ms      11,583            11,583
//	PostgreSQL, 1        98 µs / 0.70 ms      13,428            13,428
//	PostgreSQL, 2        90 µs / 0.80 ms      13,913             6,956
//	PostgreSQL, 3        91 µs / 0.91 ms      11,777             3,926
//
// The total does not fall as replicas are added: on two cores shared by
// the clients, every replica and PostgreSQL, the replicas divide the same
// CPU, so the per-replica figure for 3 replicas measures the machine, not
// the store. These describe that machine, not a deployment.
//
// # Security
//
// The database holds only what the file store holds: key material sealed
// under the KEK (AES-256-GCM, bound to call and version) and records
// authenticated under a key derived from it. Someone who reads the
// database (or a backup) learns call ids, identities, times and the audit
// log, but no key; someone who writes it can delete state (denial of
// service) but cannot add a participant, revive a compromised version or
// roll a record back unnoticed at the next server start. Keep the KEK out
// of the database and its backups.
//
// # Concurrency
//
// A Store is safe for concurrent use. Close stops the listener and waits
// for it; close the Server first.
package pgstore
