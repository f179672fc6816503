package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/securecall/securecall/kms/kmsserver"
)

// Store is a [kmsserver.SharedStore] on PostgreSQL. Open one per server
// process; any number of processes may share the database.
type Store struct {
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig
	changes chan kmsserver.Change
	sweep   atomic.Int64

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

var _ kmsserver.SharedStore = (*Store)(nil)

// notifyChannel is the LISTEN/NOTIFY channel of a store's changes.
const notifyChannel = "securecall_kms"

// lockUpdate is the advisory lock every Update holds: the audit chain head.
const lockUpdate = 0x5ecca11_0001

// lockMigrate is the advisory lock the schema migration holds.
const lockMigrate = 0x5ecca11_0002

// migrations are applied in order; the schema's version is how many are.
// Never change one that has shipped: append.
var migrations = []string{
	// 1: records and nonces.
	`CREATE TABLE securecall_kms_records (
		bucket text COLLATE "C" NOT NULL,
		key    text COLLATE "C" NOT NULL,
		value  bytea NOT NULL,
		PRIMARY KEY (bucket, key)
	);
	CREATE TABLE securecall_kms_nonces (
		nonce   text PRIMARY KEY,
		expires timestamptz NOT NULL
	);
	CREATE INDEX securecall_kms_nonces_expires ON securecall_kms_nonces (expires);`,
}

// SchemaVersion is the schema version this package creates and reads.
var SchemaVersion = len(migrations)

// ErrSchema reports a database whose schema is newer than this package.
var ErrSchema = errors.New("pgstore: database schema is newer than this server")

// maxChanges is how many notifications wait for the server in memory;
// beyond it the listener waits and PostgreSQL queues them.
const maxChanges = 4096

// Open connects to the database named by dsn (a PostgreSQL connection
// string or URL), creates or migrates the schema, and starts listening for
// changes. ctx bounds the connection and the migration.
func Open(ctx context.Context, dsn string) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connection string: %w", err)
	}
	if pcfg.MaxConns < 8 {
		pcfg.MaxConns = 8
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	s := &Store{pool: pool, connCfg: pcfg.ConnConfig.Copy(), changes: make(chan kmsserver.Change, maxChanges)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// The first listening connection is made before Open returns, so that
	// no change committed after Open is missed.
	conn, err := s.listen(ctx)
	if err != nil {
		s.cancel()
		pool.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.listener(conn)
	return s, nil
}

// migrate brings the schema to SchemaVersion, once across replicas that
// start together.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockMigrate)); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS securecall_kms_schema (version integer NOT NULL)`); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM securecall_kms_schema`).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			if _, err := tx.Exec(ctx, `INSERT INTO securecall_kms_schema (version) VALUES (0)`); err != nil {
				return fmt.Errorf("pgstore: migrate: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("%w: version %d, this server knows %d", ErrSchema, v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("pgstore: migration %d: %w", i+1, err)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE securecall_kms_schema SET version = $1`, len(migrations)); err != nil {
			return fmt.Errorf("pgstore: migrate: %w", err)
		}
		return nil
	})
}

func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: listen: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("pgstore: listen: %w", err)
	}
	return conn, nil
}

// listener forwards notifications; after a lost connection it connects
// again (backing off up to 2 s) and sends a Resync.
func (s *Store) listener(conn *pgx.Conn) {
	defer s.wg.Done()
	defer close(s.changes)
	backoff := 50 * time.Millisecond
	for {
		for conn != nil {
			n, err := conn.WaitForNotification(s.ctx)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				break
			}
			backoff = 50 * time.Millisecond
			bucket, key, ok := strings.Cut(n.Payload, "/")
			c := kmsserver.Change{Bucket: bucket, Key: key}
			if !ok {
				c = kmsserver.Change{Resync: true}
			}
			if !s.send(c) {
				conn.Close(context.Background())
				return
			}
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		c, err := s.listen(ctx)
		cancel()
		if err != nil {
			continue
		}
		conn = c
		// Whatever was committed while no connection listened is read
		// again by the server.
		if !s.send(kmsserver.Change{Resync: true}) {
			conn.Close(context.Background())
			return
		}
	}
}

// send hands c to the server, waiting while the queue is full (PostgreSQL
// keeps later notifications meanwhile); false once the store is closed.
func (s *Store) send(c kmsserver.Change) bool {
	select {
	case s.changes <- c:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// Changes implements [kmsserver.SharedStore].
func (s *Store) Changes() <-chan kmsserver.Change { return s.changes }

// Get implements [kmsserver.Store].
func (s *Store) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	return get(ctx, s.pool, bucket, key)
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func get(ctx context.Context, q querier, bucket, key string) ([]byte, error) {
	var v []byte
	err := q.QueryRow(ctx, `SELECT value FROM securecall_kms_records WHERE bucket = $1 AND key = $2`, bucket, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: get: %w", err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// ForEach implements [kmsserver.Store].
func (s *Store) ForEach(ctx context.Context, bucket string, fn func(key string, value []byte) error) error {
	return forEach(ctx, s.pool, bucket, fn)
}

func forEach(ctx context.Context, q querier, bucket string, fn func(key string, value []byte) error) error {
	rows, err := q.Query(ctx, `SELECT key, value FROM securecall_kms_records WHERE bucket = $1 ORDER BY key`, bucket)
	if err != nil {
		return fmt.Errorf("pgstore: for each: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return fmt.Errorf("pgstore: for each: %w", err)
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgstore: for each: %w", err)
	}
	return nil
}

// Commit implements [kmsserver.Store], as an Update.
func (s *Store) Commit(ctx context.Context, writes []kmsserver.Write) error {
	return s.Update(ctx, func(func(string, string) ([]byte, error)) ([]kmsserver.Write, error) {
		return writes, nil
	})
}

// maxPayload bounds a notification's payload (PostgreSQL allows under
// 8000 bytes); a longer key is announced as a Resync.
const maxPayload = 7000

// Update implements [kmsserver.SharedStore]: a transaction holding the
// store's advisory lock, so that every replica's commits are serialised
// (on the audit chain head), with a notification per changed record sent
// at commit.
func (s *Store) Update(ctx context.Context, fn func(get func(bucket, key string) ([]byte, error)) ([]kmsserver.Write, error)) error {
	if err := s.usable(); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockUpdate)); err != nil {
			return err
		}
		writes, err := fn(func(bucket, key string) ([]byte, error) { return get(ctx, tx, bucket, key) })
		if err != nil {
			return err
		}
		if len(writes) == 0 {
			return nil
		}
		b := &pgx.Batch{}
		notified := map[string]bool{}
		for _, w := range writes {
			if w.Value == nil {
				b.Queue(`DELETE FROM securecall_kms_records WHERE bucket = $1 AND key = $2`, w.Bucket, w.Key)
			} else {
				b.Queue(`INSERT INTO securecall_kms_records (bucket, key, value) VALUES ($1, $2, $3)
					ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value`, w.Bucket, w.Key, w.Value)
			}
			if w.Bucket == "audit" {
				continue
			}
			payload := w.Bucket + "/" + w.Key
			if len(payload) > maxPayload {
				payload = "*"
			}
			if !notified[payload] {
				notified[payload] = true
				b.Queue(`SELECT pg_notify($1, $2)`, notifyChannel, payload)
			}
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("pgstore: commit: %w", err)
	}
	return nil
}

// Snapshot implements [kmsserver.SharedStore] with a read-only
// repeatable-read transaction.
func (s *Store) Snapshot(ctx context.Context, fn func(view kmsserver.Store) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("pgstore: snapshot: %w", err)
	}
	defer tx.Rollback(context.Background())
	return fn(&view{tx: tx})
}

// view is a Store reading one transaction.
type view struct{ tx pgx.Tx }

func (v *view) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	return get(ctx, v.tx, bucket, key)
}

func (v *view) ForEach(ctx context.Context, bucket string, fn func(string, []byte) error) error {
	return forEach(ctx, v.tx, bucket, fn)
}

func (v *view) Commit(context.Context, []kmsserver.Write) error {
	return errors.New("pgstore: a snapshot is read-only")
}

func (v *view) Close() error { return nil }

// UseNonce implements [kmsserver.SharedStore]. Expired nonces are deleted
// at most once a minute, by whichever replica gets there.
func (s *Store) UseNonce(ctx context.Context, nonce string, expires time.Time) (bool, error) {
	if err := s.usable(); err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO securecall_kms_nonces (nonce, expires) VALUES ($1, $2) ON CONFLICT DO NOTHING`, nonce, expires)
	if err != nil {
		return false, fmt.Errorf("pgstore: nonce: %w", err)
	}
	now := time.Now()
	if last := s.sweep.Load(); now.UnixNano()-last > int64(time.Minute) && s.sweep.CompareAndSwap(last, now.UnixNano()) {
		if _, err := s.pool.Exec(ctx, `DELETE FROM securecall_kms_nonces WHERE expires < $1`, now); err != nil {
			return false, fmt.Errorf("pgstore: nonce sweep: %w", err)
		}
	}
	return tag.RowsAffected() == 1, nil
}

func (s *Store) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("pgstore: %w", net.ErrClosed)
	}
	return nil
}

// Close implements [kmsserver.Store]: it stops listening, joins the
// listener and closes the pool. A second call returns an error wrapping
// [net.ErrClosed].
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("pgstore: %w", net.ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	s.pool.Close()
	return nil
}
