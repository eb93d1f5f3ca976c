package store_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/store"
)

// slowMeta widens the window between reading a record and writing what
// replaces it, so that two Puts overlap there.
type slowMeta struct{ *pebblestore.Store }

const slowMetaPause = 20 * time.Millisecond

func (s slowMeta) GetMeta(ctx context.Context, kind byte, key []byte) ([]byte, error) {
	v, err := s.Store.GetMeta(ctx, kind, key)
	time.Sleep(slowMetaPause)
	return v, err
}

func (s slowMeta) UpdateMeta(ctx context.Context, kind byte, key []byte, fn func(old []byte) ([]castore.MetaRecord, error)) error {
	return s.Store.UpdateMeta(ctx, kind, key, func(old []byte) ([]castore.MetaRecord, error) {
		time.Sleep(slowMetaPause)
		return fn(old)
	})
}

// TestPutSignaturesSharedDatabase: two stores on one PostgreSQL database,
// as two servers run them, record the same store path at the same moment,
// round after round, each with a signature of its own (two builders
// signing one output): the path keeps every signature. Reading the
// record before replacing it pauses, so the two Puts overlap.
func TestPutSignaturesSharedDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url, dir := testpg.New(t), t.TempDir()
	var indexes []*store.Index
	var first *pebblestore.Store
	for range 2 {
		s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if first == nil {
			first = s
		}
		indexes = append(indexes, store.NewIndex(slowMeta{s}, s))
	}
	p := gcPath(t, first, "7s6kzph7l0dcbfmjap64f0czdafn3b7x-signed", testtree.Dir(testtree.Entries{
		"file": testtree.File(testtree.Text("signed twice\n")),
	}))
	const rounds = 8
	for i := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, len(indexes))
		for j, x := range indexes {
			wg.Go(func() {
				q := *p
				q.Signatures = []store.Signature{{Name: fmt.Sprintf("builder-%d-%d", i, j), Data: bytes.Repeat([]byte{byte(2*i + j)}, 64)}}
				errs[j] = x.Put(ctx, &q)
			})
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Fatalf("round %d, store %d: %v", i, j, err)
			}
		}
	}
	for j, x := range indexes {
		got, err := x.Get(ctx, p.Digest())
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Signatures) != 2*rounds {
			var names []string
			for _, s := range got.Signatures {
				names = append(names, s.Name)
			}
			t.Errorf("store %d: %d signatures after %d rounds of two Puts, want %d: %v", j, len(got.Signatures), rounds, 2*rounds, names)
		}
	}
}
