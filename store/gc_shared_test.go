package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/store"
)

// TestGCSharedDatabasePut: two stores on one PostgreSQL database, as two
// servers run them. In each round the second writes a tree that nothing
// else uses and waits until the tree's uses are older than the grace
// period, then records it as a store path while the first collects, so
// the tree is garbage for the collection unless the Put's own use keeps
// it (the grace period covers a Put that began shortly before the
// collection). Every Put either fails as incomplete (the
// collection took the tree before the Put looked) or records a path whose
// whole tree stays, and renders on both stores.
func TestGCSharedDatabasePut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url, dir := testpg.New(t), t.TempDir()
	open := func() (*pebblestore.Store, *store.Index) {
		s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{RecordUses: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, store.NewIndex(s, s)
	}
	collector, cx := open()
	writer, wx := open()
	const grace = 500 * time.Millisecond
	var recorded, refused int
	for round := range 6 {
		name := fmt.Sprintf("%02d6kzph7l0dcbfmjap64f0czdafn3b7x-r%d", round, round)
		p := gcPath(t, writer, name, gcTree(uint64(round), uint64(1000+round)))
		time.Sleep(grace + 100*time.Millisecond)
		collected := make(chan error, 1)
		go func() {
			_, err := cx.GC(ctx, collector, pebblestore.GCOptions{Grace: grace})
			collected <- err
		}()
		err := wx.Put(ctx, p)
		if gcErr := <-collected; gcErr != nil {
			t.Fatalf("round %d: collection: %v", round, gcErr)
		}
		switch {
		case errors.Is(err, store.ErrIncomplete):
			refused++
			continue
		case err != nil:
			t.Fatalf("round %d: put: %v", round, err)
		}
		recorded++
		if err := store.CheckTree(ctx, collector, p.Root); err != nil {
			t.Fatalf("round %d: %s was recorded but its tree is not whole after the collection: %v", round, p.Path, err)
		}
		checkRenders(t, collector, p)
		checkRenders(t, writer, p)
	}
	t.Logf("%d paths recorded, %d refused as incomplete", recorded, refused)
	if recorded == 0 {
		t.Fatal("no Put was recorded: the test checked nothing")
	}
}
