package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nixcas/nixcas/internal/testpg"
)

// pipelines counts the round trips of a store: queries and pipelines.
type pipelines struct{ n atomic.Int64 }

func (p *pipelines) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	p.n.Add(1)
	return ctx
}
func (p *pipelines) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (p *pipelines) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	p.n.Add(1)
	return ctx
}
func (p *pipelines) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (p *pipelines) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestPostgresGroupCommit: use records and commits of batches that read
// nothing, made while every pipeline a process may have out is out, go
// together in the next ones (at most one round trip per pipeline out,
// where each call alone would be one), with the result each would have
// had alone:
// of two batches inserting one key, one is applied and the other fails
// with errKeyExists, applying nothing, while the others of the group are
// applied, counters included, and each lookup reports its item. The
// pipelines out are held by taking the uses lock exclusively elsewhere,
// as a collection does.
func TestPostgresGroupCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testpg.New(t)
	var trips pipelines
	pgTracer = &trips
	s, err := OpenPostgres(ctx, url, t.TempDir(), Options{})
	pgTracer = nil
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.db.(*pgKV)
	if err := db.set(ctx, []byte("x-old"), []byte("old"), false); err != nil {
		t.Fatal(err)
	}
	before, err := db.counters(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		conflict bool // two batches insert one key: the group is sent again, call by call
	}{{"merged", false}, {"conflict", true}} {
		t.Run(tc.name, func(t *testing.T) {
			blocker := holdUsesLock(t, ctx, url)
			p := tc.name + "-"
			var wg sync.WaitGroup
			// The first calls' pipelines, as many as may be out, wait
			// for the lock.
			firstErr := make([]error, pgGroupPipelines)
			base := trips.n.Load()
			for i := range pgGroupPipelines {
				wg.Go(func() { _, firstErr[i] = db.recordUse(ctx, []byte(fmt.Sprintf("%sR-first-%d", p, i)), nil, nil) })
			}
			waitForGroup(t, db, 0)
			for deadline := time.Now().Add(30 * time.Second); trips.n.Load() < base+pgGroupPipelines; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the first pipelines were never sent")
				}
			}
			start := trips.n.Load()

			const users = 20
			found := make([]bool, users)
			useErr := make([]error, users)
			for i := range users {
				wg.Go(func() {
					item := []byte("x-old")
					if i%2 == 1 {
						item = []byte(fmt.Sprintf("%sx-absent-%d", p, i))
					}
					found[i], useErr[i] = db.recordUse(ctx, []byte(fmt.Sprintf("%sR-%02d", p, i)), item, nil)
				})
			}
			const writers = 10
			commitErr := make([]error, writers)
			for i := range writers {
				wg.Go(func() {
					b := db.newBatch()
					defer b.close()
					key := fmt.Sprintf("%sk-%02d", p, i)
					if tc.conflict && i == 1 {
						key = p + "k-00"
					}
					b.insert([]byte(key), []byte(fmt.Sprintf("v%d", i)))
					b.set([]byte(fmt.Sprintf("%sq-%02d", p, i)), []byte("queued"))
					b.addCounters([]uint64{counterChunks: 1, counterUniqueChunkBytes: uint64(100 + i)})
					commitErr[i] = b.commit(ctx, false)
				})
			}
			waitForGroup(t, db, users+writers)
			if _, err := blocker.Exec(ctx, "SELECT pg_advisory_unlock($1)", pgLockUses); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			for _, err := range firstErr {
				if err != nil {
					t.Fatal(err)
				}
			}
			sent := trips.n.Load() - start
			// Each pipeline that returns hands the calls waiting to the
			// next: at most as many pipelines as were out carry them.
			if !tc.conflict && sent > pgGroupPipelines {
				t.Errorf("%d calls waiting went in %d round trips, want at most %d", users+writers, sent, pgGroupPipelines)
			}
			// A group that fails is sent again call by call.
			if max := int64(pgGroupPipelines + users + writers); tc.conflict && sent > max {
				t.Errorf("with a conflict: %d round trips, want at most %d", sent, max)
			}
			for i := range users {
				if useErr[i] != nil || found[i] != (i%2 == 0) {
					t.Errorf("use %d: found %v, %v; want found %v", i, found[i], useErr[i], i%2 == 0)
				}
				if kvValue(t, db, fmt.Sprintf("%sR-%02d", p, i)) == nil {
					t.Errorf("use record %d not written", i)
				}
			}
			var added uint64
			lost := -1 // the batch that lost the key to the other
			if tc.conflict {
				switch {
				case errors.Is(commitErr[0], errKeyExists) && commitErr[1] == nil:
					lost = 0
				case errors.Is(commitErr[1], errKeyExists) && commitErr[0] == nil:
					lost = 1
				default:
					t.Errorf("two batches inserting one key: %v, %v; want one errKeyExists", commitErr[0], commitErr[1])
				}
			}
			for i := range writers {
				key, queue := fmt.Sprintf("%sk-%02d", p, i), fmt.Sprintf("%sq-%02d", p, i)
				if tc.conflict && i == 1 {
					key = p + "k-00"
				}
				if i == lost {
					if kvValue(t, db, queue) != nil {
						t.Errorf("batch %d failed with errKeyExists but its set was applied", i)
					}
					continue
				}
				if commitErr[i] != nil {
					t.Errorf("batch %d: %v", i, commitErr[i])
					continue
				}
				if got := string(kvValue(t, db, key)); got != fmt.Sprintf("v%d", i) || kvValue(t, db, queue) == nil {
					t.Errorf("batch %d: %s = %q, %s written %v", i, key, got, queue, kvValue(t, db, queue) != nil)
				}
				added += uint64(100 + i)
			}
			after, err := db.counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := after[counterUniqueChunkBytes] - before[counterUniqueChunkBytes]; got != added {
				t.Errorf("counter of the applied batches grew by %d, want %d", got, added)
			}
			before = after
		})
	}
}

// TestPostgresGroupWaitCancelled: a call waiting for a pipeline out (held
// here by taking the uses lock exclusively elsewhere, as a collection
// does) leaves when its context ends, writing nothing; the pipeline out
// then completes, and the group goes on.
func TestPostgresGroupWaitCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testpg.New(t)
	s, err := OpenPostgres(ctx, url, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := s.db.(*pgKV)
	blocker := holdUsesLock(t, ctx, url)
	out := make(chan error, 1)
	go func() {
		_, err := db.recordUse(ctx, []byte("R-out"), nil, nil)
		out <- err
	}()
	waitForGroup(t, db, 0)
	wctx, wcancel := context.WithCancel(ctx)
	left := make(chan error, 1)
	go func() {
		_, err := db.recordUse(wctx, []byte("R-left"), nil, nil)
		left <- err
	}()
	waitForGroup(t, db, 1)
	wcancel()
	select {
	case err := <-left:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a waiting call whose context ended returned %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		blocker.Exec(ctx, "SELECT pg_advisory_unlock($1)", pgLockUses)
		<-out
		<-left
		t.Fatal("a waiting call whose context ended was still waiting 30 s later")
	}
	db.group.mu.Lock()
	n := len(db.group.waiting)
	db.group.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls still waiting after the only one left", n)
	}
	if _, err := blocker.Exec(ctx, "SELECT pg_advisory_unlock($1)", pgLockUses); err != nil {
		t.Fatal(err)
	}
	if err := <-out; err != nil {
		t.Fatalf("the pipeline out: %v", err)
	}
	if _, err := db.recordUse(ctx, []byte("R-after"), nil, nil); err != nil {
		t.Fatalf("a call after: %v", err)
	}
	for _, k := range []string{"R-out", "R-after"} {
		if ok, err := has(ctx, db, []byte(k)); err != nil || !ok {
			t.Errorf("use record %s: stored %v (%v), want stored", k, ok, err)
		}
	}
	if ok, err := has(ctx, db, []byte("R-left")); err != nil || ok {
		t.Errorf("the use record of the call that left: stored %v (%v), want not", ok, err)
	}
}

// holdUsesLock takes the uses lock exclusively on a connection of its own,
// as a collection does, until the test ends or the caller unlocks it.
func holdUsesLock(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	blocker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blocker.Close(context.Background()) })
	if _, err := blocker.Exec(ctx, "SELECT pg_advisory_lock($1)", pgLockUses); err != nil {
		t.Fatal(err)
	}
	return blocker
}

// waitForGroup waits until every pipeline db may have is out and n calls
// wait for one.
func waitForGroup(t *testing.T, db *pgKV, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		db.group.mu.Lock()
		got, out := len(db.group.waiting), db.group.out
		db.group.mu.Unlock()
		if out == pgGroupPipelines && got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls waiting (%d pipelines out), want %d", got, out, n)
		}
	}
}
