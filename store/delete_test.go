package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nixcas/nixcas/store"
)

// TestIndexDelete: a deleted path is gone by digest and by NAR hash, the
// count drops, a second delete reports nothing, and a path sharing the
// NAR keeps its NAR hash record.
func TestIndexDelete(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	a := ingestNAR(t, s, pathA, "same")
	b := ingestNAR(t, s, pathB, "same") // same NAR, another path
	c := ingestNAR(t, s, "1c6kzph7l0dcbfmjap64f0czdafn3b7x-x", "other")
	for _, p := range []*store.PathInfo{a, b, c} {
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := x.CountPaths(ctx); err != nil || n != 3 {
		t.Fatalf("CountPaths: %d, %v", n, err)
	}
	// b was put last, so the NAR hash names b; deleting a leaves it.
	for _, p := range []*store.PathInfo{a, c} {
		if ok, err := x.Delete(ctx, p.Digest()); err != nil || !ok {
			t.Fatalf("Delete %s: %v, %v", p.Path, ok, err)
		}
		if _, err := x.Get(ctx, p.Digest()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get %s after delete: %v", p.Path, err)
		}
	}
	if got, err := x.GetByNARHash(ctx, b.NARSha256); err != nil || got.Path != pathB {
		t.Errorf("GetByNARHash of the shared NAR: %v, %v; want %s", got, err, pathB)
	}
	if _, err := x.GetByNARHash(ctx, c.NARSha256); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetByNARHash after delete: %v", err)
	}
	if ok, err := x.Delete(ctx, c.Digest()); err != nil || ok {
		t.Errorf("second Delete: %v, %v; want false, nil", ok, err)
	}
	if n, err := x.CountPaths(ctx); err != nil || n != 1 {
		t.Errorf("CountPaths after deletes: %d, %v; want 1", n, err)
	}
	if n, err := store.NewIndex(s, s).CountPaths(ctx); err != nil || n != 1 {
		t.Errorf("CountPaths of a fresh index: %d, %v; want 1", n, err)
	}
}
