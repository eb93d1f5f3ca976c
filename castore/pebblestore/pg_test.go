package pebblestore_test

import (
	"context"
	"sync"
	"sync/atomic"
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

// TestPostgresGCKeepsWhatIsUsedMeanwhile is TestGCKeepsWhatIsUsedMeanwhile
// with the collection in one store and the uses in another on the same
// database, as two replicas of a server would be.
func TestPostgresGCKeepsWhatIsUsedMeanwhile(t *testing.T) {
	url, dir := testpg.New(t), t.TempDir()
	opts := pebblestore.Options{RecordUses: true}
	collector, user := openPostgres(t, url, dir, opts), openPostgres(t, url, dir, opts)
	gcKeepsUsed(t, collector, user, 3, 1000)
}

// TestPostgresTwoStoresSameChunks: two stores on one database and one
// frames directory (two replicas) put the same chunks at the same time and
// pack them at the same time. Each chunk is stored and counted once, both
// read every one back, the counters agree with a fresh count, and a
// collection with nothing live then frees every chunk and frame.
func TestPostgresTwoStoresSameChunks(t *testing.T) {
	ctx := context.Background()
	url, dir := testpg.New(t), t.TempDir()
	a, b := openPostgres(t, url, dir, framedOptions), openPostgres(t, url, dir, framedOptions)
	chunks := versionedChunks(0, 200)
	var wg sync.WaitGroup
	var newA, newB atomic.Int64
	for w := range 4 {
		s, count := a, &newA
		if w%2 == 1 {
			s, count = b, &newB
		}
		wg.Go(func() {
			for i := range chunks {
				c := chunks[(i+w*37)%len(chunks)]
				ok, err := s.PutChunk(ctx, castore.NewChunk(c))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					count.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := newA.Load() + newB.Load(); got != int64(len(chunks)) {
		t.Fatalf("%d puts reported a new chunk (%d on one store, %d on the other), want %d", got, newA.Load(), newB.Load(), len(chunks))
	}
	wg.Go(func() {
		if err := a.PackPending(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		if err := b.PackPending(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	var ds []castore.Digest
	for _, c := range chunks {
		ds = append(ds, castore.NewChunk(c).Digest())
	}
	checkAll(t, a, ds, chunks)
	checkAll(t, b, ds, chunks)
	st := castoretest.MustStats(t, a)
	fresh, err := a.Recount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != fresh || st.Chunks != uint64(len(chunks)) || st.Frames == 0 {
		t.Fatalf("counters %+v, a fresh count %+v, want %d chunks in frames", st, fresh, len(chunks))
	}
	// Nothing is live: everything goes, including any frame a duplicate
	// pack left without chunks.
	noRoots := func(context.Context, func(string, castore.Entry) error) error { return nil }
	if _, err := a.GC(ctx, pebblestore.GCOptions{Roots: noRoots}); err != nil {
		t.Fatal(err)
	}
	st = castoretest.MustStats(t, b)
	if st.Chunks != 0 || st.Frames != 0 || st.StoredBytes != 0 {
		t.Fatalf("after collecting everything, Stats = %+v", st)
	}
	if files, _ := frameFiles(t, dir); len(files) != 0 {
		t.Fatalf("after collecting everything, %d frame files are left", len(files))
	}
}
