package kmsserver

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store keeps the KMS's state: devices, calls with their (KEK-sealed) key
// versions, and the audit log. Values are opaque bytes; key material in them
// is already encrypted under the server's key-encryption key.
//
// The [Server] is the store's only writer, and it writes through Commit
// alone, so a store backed by a replicated database needs only these four
// methods to be atomic, durable and linearizable.
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
	// Bucket groups keys: "devices", "calls", "audit" or "meta".
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
)

// FileStore is the embedded [Store]: one bbolt file, fsynced on every commit.
type FileStore struct {
	db   *bolt.DB
	mu   sync.Mutex
	done bool
}

var _ Store = (*FileStore)(nil)

// OpenFileStore opens (or creates, mode 0600) the store file at path. Only
// one process may have the file open; another waits up to a second and then
// fails.
func OpenFileStore(path string) (*FileStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("kmsserver: open store %q: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketDevices, bucketCalls, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("kmsserver: open store %q: %w", path, err)
	}
	return &FileStore{db: db}, nil
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
