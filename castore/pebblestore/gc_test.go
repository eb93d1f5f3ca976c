package pebblestore_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// TestGCKeepsWhatIsUsedMeanwhile: a store of unreferenced chunks is
// collected while four goroutines ask for random ones (HasChunk) and put
// others again (PutChunk). Every chunk found or put after the collection
// was called is there when it returns; every chunk nothing used is gone;
// the counters agree with a fresh count. Ten rounds, so that uses land in
// every step of the collection.
func TestGCKeepsWhatIsUsedMeanwhile(t *testing.T) {
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{RecordUses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gcKeepsUsed(t, s, s, 10, 3000)
}

// gcKeepsUsed is TestGCKeepsWhatIsUsedMeanwhile with the collection on
// collector and the uses on s, for rounds rounds of n chunks.
func gcKeepsUsed(t *testing.T, collector, s *pebblestore.Store, rounds, n int) {
	ctx := context.Background()
	const grace = 200 * time.Millisecond
	chunk := func(i int) castore.Chunk {
		b := make([]byte, 64+i%200)
		binary.LittleEndian.PutUint64(b, uint64(i))
		return castore.NewChunk(b)
	}
	for round := range rounds {
		for i := range n {
			if _, err := s.PutChunk(ctx, chunk(round*n+i)); err != nil {
				t.Fatal(err)
			}
		}
		// Older than the grace period: only uses during the collection
		// keep any of them.
		time.Sleep(grace + 100*time.Millisecond)
		var (
			mu   sync.Mutex
			used = map[castore.Digest]bool{}
			wg   sync.WaitGroup
		)
		stop := make(chan struct{})
		var res pebblestore.GCResult
		var gcErr error
		done := make(chan struct{})
		// The collection asks for its roots once its epoch has begun: uses
		// from then on are during the collection. (A use before it, on a
		// machine slow enough that the collection starts more than the
		// grace period later, is rightly older than the grace.)
		marking := make(chan struct{})
		roots := func(context.Context, func(string, castore.Entry) error) error {
			close(marking)
			return nil
		}
		go func() {
			defer close(done)
			res, gcErr = collector.GC(ctx, pebblestore.GCOptions{Roots: roots, Grace: grace, RewriteBelow: 0.5})
		}()
		for w := range 4 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				select {
				case <-marking:
				case <-done:
					return
				}
				for {
					select {
					case <-stop:
						return
					default:
					}
					c := chunk(round*n + rng.IntN(n))
					if w%2 == 0 {
						if ok, err := s.HasChunk(ctx, c.Digest()); err != nil {
							t.Error(err)
							return
						} else if !ok {
							continue
						}
					} else if _, err := s.PutChunk(ctx, c); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					used[c.Digest()] = true
					mu.Unlock()
				}
			})
		}
		<-done
		close(stop)
		wg.Wait()
		if gcErr != nil {
			t.Fatal(gcErr)
		}
		kept, gone := 0, 0
		for i := range n {
			d := chunk(round*n + i).Digest()
			ok, err := s.HasChunk(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case used[d] && !ok:
				t.Fatalf("round %d: chunk %s was used during the collection and is gone", round, d)
			case ok:
				kept++
			default:
				gone++
			}
		}
		t.Logf("round %d: %d chunks used during the collection, %d kept, %d deleted (%d by the collection)", round, len(used), kept, gone, res.ChunksDeleted)
		if kept+gone != n || gone == 0 {
			t.Fatalf("round %d: nothing was collected", round)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := collector.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := s.Recount(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st != fresh {
			t.Fatalf("round %d: counters %+v, a fresh count %+v", round, st, fresh)
		}
	}
}

// TestGCOptionsRefused: invalid options are refused before anything is
// read; a second collection at once is ErrGCRunning.
func TestGCOptionsRefused(t *testing.T) {
	ctx := context.Background()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	roots := func(context.Context, func(string, castore.Entry) error) error { return nil }
	for _, o := range []pebblestore.GCOptions{
		{},
		{Roots: roots, RewriteBelow: -0.1},
		{Roots: roots, RewriteBelow: 1.5},
		{Roots: roots, Grace: -time.Second},
	} {
		if _, err := s.GC(ctx, o); err == nil {
			t.Errorf("GC(%+v) succeeded", o)
		}
	}
	release, first := blockedGC(s)
	if _, err := s.GC(ctx, pebblestore.GCOptions{Roots: roots}); err != pebblestore.ErrGCRunning {
		t.Errorf("a second collection at once: %v, want ErrGCRunning", err)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// blockedGC starts a collection of s that waits, listing its roots (none),
// until release is called; done then has its error.
func blockedGC(s *pebblestore.Store) (release func(), done <-chan error) {
	block, started, result := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := s.GC(context.Background(), pebblestore.GCOptions{Roots: func(context.Context, func(string, castore.Entry) error) error {
			close(started)
			<-block
			return nil
		}})
		result <- err
	}()
	<-started
	return func() { close(block) }, result
}

// TestGCCloseWaits: closing the store while a collection runs waits for
// it to finish, and the collection completes.
func TestGCCloseWaits(t *testing.T) {
	ctx := context.Background()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutChunk(ctx, castore.NewChunk([]byte("garbage"))); err != nil {
		t.Fatal(err)
	}
	release, first := blockedGC(s)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	time.Sleep(50 * time.Millisecond) // let Close wait for the collection
	release()
	select {
	case err := <-first:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the collection did not finish within a minute of Close")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
