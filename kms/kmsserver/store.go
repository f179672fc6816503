package kmsserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Store keeps the KMS's state: devices, calls with their (KEK-sealed) key
// versions, and the audit log. Values are opaque bytes; key material in them
// is already encrypted under the server's key-encryption key.
//
// The [Server] is the store's only writer, and it writes through Commit
// alone, so a store backed by a replicated database needs only these four
// methods to be atomic, durable and linearizable. A store that several
// servers share implements [SharedStore] as well.
type Store interface {
	// Get returns the value of key in bucket, or nil if there is none.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// ForEach calls fn for every key of bucket in ascending byte order,
	// stopping at the first error fn returns. fn must not keep value.
	ForEach(ctx context.Context, bucket string, fn func(key string, value []byte) error) error
	// Commit applies writes atomically: when it returns nil every write is
	// on stable storage; when it returns an error none is. A write with a
	// nil Value deletes its key.
	Commit(ctx context.Context, writes []Write) error
	// Close releases the store.
	Close() error
}

// Write is one change in a [Store.Commit].
type Write struct {
	// Bucket groups keys: "devices", "calls", "revoked", "audit",
	// "nonces" or "meta".
	Bucket string
	// Key names the value within its bucket.
	Key string
	// Value is the new value; nil deletes Key.
	Value []byte
}

// The buckets the server uses.
const (
	bucketDevices = "devices"
	bucketCalls   = "calls"
	bucketAudit   = "audit"
	bucketNonces  = "nonces"
	bucketRevoked = "revoked"
)

// buckets are every bucket the server writes.
var buckets = []string{bucketDevices, bucketCalls, bucketRevoked, bucketAudit, bucketMeta, bucketNonces}

// FileStore is the embedded [Store]: one bbolt file, fsynced on every commit.
type FileStore struct {
	db   *bolt.DB
	mu   sync.Mutex
	done bool
}

var _ Store = (*FileStore)(nil)

// OpenFileStore opens (or creates, mode 0600) the store file at path. Only
// one process may have the file open; another waits up to a second and then
// fails with [ErrStoreLocked]. A damaged file (truncated, or with altered pages) fails with an
// error naming it, before the server reads anything from it: the file's
// size is checked against its metadata (so that no read can fault past
// its end), and every page of every bucket is read once under a fault and
// panic guard.
func OpenFileStore(path string) (*FileStore, error) {
	if err := checkFileSize(path); err != nil {
		return nil, fmt.Errorf("kmsserver: open store %q: %w", path, err)
	}
	db, err := guarded(func() (*bolt.DB, error) { return bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second}) })
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %q: %w", path, ErrStoreLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("kmsserver: open store %q: %w", path, err)
	}
	_, err = guarded(func() (struct{}, error) {
		if err := walk(db); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, db.Update(func(tx *bolt.Tx) error {
			for _, b := range buckets {
				if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("kmsserver: open store %q: %w", path, err)
	}
	return &FileStore{db: db}, nil
}

// ErrDamagedStore reports a store file that cannot be read safely.
var ErrDamagedStore = errors.New("kmsserver: store file damaged")

// ErrStoreLocked: another FileStore, usually another server process, has
// the store file open. Only one may; stop it or use another directory.
var ErrStoreLocked = errors.New("kmsserver: store file is locked by another process")

// guarded runs f turning a panic, or a memory fault in the file mapping,
// into an error wrapping ErrDamagedStore.
func guarded[T any](f func() (T, error)) (v T, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDamagedStore, r)
		}
	}()
	return f()
}

// walk reads every key and value of every bucket.
func walk(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil && b.Bucket(k) == nil {
					return fmt.Errorf("%w: bucket %q: key %q has no value", ErrDamagedStore, name, k)
				}
				return nil
			})
		})
	})
}

// bbolt's file layout, as far as checkFileSize reads it: two meta pages at
// the start, each a 16-byte page header followed by the meta fields.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16
	boltMetaSize   = 64 // magic ... txid, then the checksum
)

// checkFileSize refuses a file shorter than its valid meta page says it is
// (bbolt maps the whole file and would fault reading past its end), or one
// with no valid meta page. A missing or empty file is fine: bbolt creates
// it.
func checkFileSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	var best struct {
		ok             bool
		txid, pgid, ps uint64
	}
	// Page 0 is at offset 0; page 1 at the page size, which page 0 states
	// (or, if page 0 is damaged, one of the usual sizes).
	for _, off := range []int64{0, 4096, 8192, 16384, 65536} {
		buf := make([]byte, boltPageHeader+boltMetaSize+8)
		if _, err := f.ReadAt(buf, off); err != nil {
			continue
		}
		m := buf[boltPageHeader:]
		le := binary.LittleEndian
		magic, version, ps := le.Uint32(m[0:]), le.Uint32(m[4:]), uint64(le.Uint32(m[8:]))
		pgid, txid, sum := le.Uint64(m[40:]), le.Uint64(m[48:]), le.Uint64(m[56:])
		h := fnv.New64a()
		h.Write(m[:56])
		if magic != boltMagic || version != boltVersion || sum != h.Sum64() || ps < 512 || ps > 1<<20 {
			continue
		}
		if off != 0 && uint64(off) != ps {
			continue
		}
		if !best.ok || txid > best.txid {
			best.ok, best.txid, best.pgid, best.ps = true, txid, pgid, ps
		}
	}
	if !best.ok {
		return fmt.Errorf("%w: no valid meta page", ErrDamagedStore)
	}
	if best.pgid > uint64(size)/best.ps {
		return fmt.Errorf("%w: %d bytes, but its metadata says %d pages of %d bytes (truncated?)", ErrDamagedStore, size, best.pgid, best.ps)
	}
	return nil
}

// Get implements [Store].
func (s *FileStore) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		if v := b.Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kmsserver: store get: %w", err)
	}
	return out, nil
}

// ForEach implements [Store].
func (s *FileStore) ForEach(ctx context.Context, bucket string, fn func(key string, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fn(string(k), v)
		})
	})
}

// Commit implements [Store]. bbolt fsyncs the file before Update returns.
func (s *FileStore) Commit(ctx context.Context, writes []Write) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range writes {
			b, err := tx.CreateBucketIfNotExists([]byte(w.Bucket))
			if err != nil {
				return err
			}
			if w.Value == nil {
				err = b.Delete([]byte(w.Key))
			} else {
				err = b.Put([]byte(w.Key), w.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kmsserver: store commit: %w", err)
	}
	return nil
}

// Close implements [Store]. A second call returns an error wrapping
// [net.ErrClosed].
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return fmt.Errorf("kmsserver: store: %w", net.ErrClosed)
	}
	s.done = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("kmsserver: close store: %w", err)
	}
	return nil
}
