package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/store"
)

// TestCountPaths: the first count scans what is there, later Puts of new
// paths (concurrent ones too) add to it, and putting a path again does not.
func TestCountPaths(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	if err := x.Put(ctx, ingestNAR(t, s, pathA, "a")); err != nil {
		t.Fatal(err)
	}
	// A fresh index over the same store counts by scanning.
	y := store.NewIndex(s, s)
	want := func(ix *store.Index, n uint64) {
		t.Helper()
		if got, err := ix.CountPaths(ctx); err != nil || got != n {
			t.Errorf("CountPaths: %d, %v; want %d", got, err, n)
		}
	}
	want(y, 1)
	if err := y.Put(ctx, ingestNAR(t, s, pathA, "a")); err != nil {
		t.Fatal(err)
	}
	want(y, 1)
	paths := []string{pathB, "1c6kzph7l0dcbfmjap64f0czdafn3b7x-x", "2c6kzph7l0dcbfmjap64f0czdafn3b7x-y"}
	infos := make([]*store.PathInfo, len(paths))
	for i, p := range paths {
		infos[i] = ingestNAR(t, s, p, p)
	}
	var wg sync.WaitGroup
	for range 2 { // each path put twice, concurrently
		for _, p := range infos {
			wg.Go(func() {
				if err := y.Put(ctx, p); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	want(y, 4)
	want(store.NewIndex(s, s), 4)
}
