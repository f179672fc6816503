package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/securecall/securecall/internal/pgtest"
	"github.com/securecall/securecall/kms/kmsserver"
	"github.com/securecall/securecall/kms/kmsserver/pgstore"
	"github.com/securecall/securecall/kms/kmsserver/storetest"
)

func TestMain(m *testing.M) {
	if runReplica() {
		return
	}
	goleak.VerifyTestMain(m)
}

var dbSeq atomic.Int64

func newDB(t *testing.T, c *pgtest.Cluster) string {
	return c.CreateDatabase(t, fmt.Sprintf("t%d", dbSeq.Add(1)))
}

func open(t testing.TB, dsn string) *pgstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The conformance suite the file store passes, on PostgreSQL.
func TestInteropPostgresStoreConformance(t *testing.T) {
	c := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) kmsserver.Store { return open(t, newDB(t, c)) })
}
