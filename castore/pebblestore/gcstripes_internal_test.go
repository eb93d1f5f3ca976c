package pebblestore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testpg"
)

// TestTreeSweepTakesNoStripe: on PostgreSQL, a collection sweeps
// directories holding the uses lock, so it must not wait for a lock
// stripe: a writer of this process may hold one while its commit waits,
// in the group, behind a use record that waits for that lock (a cycle
// PostgreSQL cannot see, which once stopped every writer of two servers
// and the collector). Here the test holds the stripe of a garbage
// directory, as such a writer would, while use records go on: the
// collection gets past its sweep, deleting the directory, and every use
// record is written meanwhile.
func TestTreeSweepTakesNoStripe(t *testing.T) {
	ctx := context.Background()
	s, err := OpenPostgres(ctx, testpg.New(t), t.TempDir(), Options{RecordUses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const grace = 200 * time.Millisecond
	garbage, err := s.PutDirectory(ctx, &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a", Target: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(grace + 100*time.Millisecond)

	unlock := sync.OnceFunc(s.lockStripes(slices.Values([]castore.Digest{garbage})))
	defer unlock()
	type gcOutcome struct {
		res GCResult
		err error
	}
	collected, marking := make(chan gcOutcome, 1), make(chan struct{})
	go func() {
		roots := func(context.Context, func(string, castore.Entry) error) error {
			close(marking)
			return nil
		}
		res, err := s.GC(ctx, GCOptions{Roots: roots, Grace: grace})
		collected <- gcOutcome{res, err}
	}()
	// Uses of a directory that is not stored (no stripe, a use record
	// each) from marking until the sweep is over: then the collection
	// ends its epoch, which waits for every stripe.
	<-marking
	stop, used := make(chan struct{}), make(chan error, 1)
	uses := 0
	go func() {
		for ; ; uses++ {
			select {
			case <-stop:
				used <- nil
				return
			default:
			}
			uctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := s.RecordUse(uctx, castore.UseDirectory, castore.Hash([]byte{byte(uses), byte(uses >> 8)}))
			cancel()
			if err != nil {
				used <- fmt.Errorf("use record %d during the collection: %w", uses, err)
				return
			}
		}
	}()
	deadline := time.After(2 * time.Minute)
	for s.gcMarks.Load() != nil {
		select {
		case <-deadline:
			// Let the collection and the uses go before failing.
			unlock()
			<-collected
			close(stop)
			<-used
			t.Fatal("a collection holding a lock stripe of a garbage directory did not get past its sweep within 2 minutes")
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(stop)
	if err := <-used; err != nil {
		t.Fatal(err)
	}
	unlock()
	out := <-collected
	if out.err != nil {
		t.Fatalf("collection: %v", out.err)
	}
	if out.res.DirectoriesDeleted != 1 {
		t.Fatalf("collection deleted %d directories, want the 1 garbage one", out.res.DirectoriesDeleted)
	}
	t.Logf("%d use records written during the collection", uses)
}
