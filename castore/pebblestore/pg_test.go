package pebblestore_test

import (
	"context"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
)

// openPostgres opens a store on the database url with frames under dir.
func openPostgres(t testing.TB, url, dir string, opts pebblestore.Options) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.OpenPostgres(context.Background(), url, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgresStore(t *testing.T) {
	castoretest.Run(t, func(t *testing.T) castore.Store {
		return openPostgres(t, testpg.New(t), t.TempDir(), pebblestore.Options{})
	})
}
