package pebblestore

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// TestPackerRecountsQueue: the bytes a process counts queued can be far
// above what its queue holds (on a shared database another process packs
// the chunks it queued; a collection deletes queued chunks). Writers wait
// for the packer while the count is above the bound, and the packer,
// finding less than a frame queued, sets the count from the queue: the
// writers go on, and what they write is packed as before.
func TestPackerRecountsQueue(t *testing.T) {
	ctx := context.Background()
	s := openPackCountStore(t)
	s.queued.Add(10 * s.maxPackLag)                         // what another process packed
	chunks := randomChunks(rand.New(rand.NewPCG(1, 2)), 64) // 256 KiB: four frames
	done := make(chan error, 1)
	go func() {
		for _, c := range chunks {
			if _, err := s.PutChunk(ctx, c); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("writers waited 2 minutes for a packer with nothing to pack (%d bytes counted queued)", s.queued.Load())
	}
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	if q := s.queued.Load(); q != 0 {
		t.Errorf("after PackPending %d bytes are counted queued, want 0", q)
	}
	for _, c := range chunks {
		got, err := s.GetChunk(ctx, c.Digest(), nil)
		if err != nil || string(got) != string(c.Data()) {
			t.Fatalf("chunk %s: %v", c.Digest(), err)
		}
	}
}

// TestPackerCountAfterCollection: queued chunks a collection deleted
// count for nothing once the packer recounts, nor when a frame later takes
// their queue entries: with chunks written after them, the count comes to
// what is left queued.
func TestPackerCountAfterCollection(t *testing.T) {
	ctx := context.Background()
	s := openPackCountStore(t)
	r := rand.New(rand.NewPCG(3, 4))
	put := func(n int) {
		t.Helper()
		for _, c := range randomChunks(r, n) {
			if _, err := s.PutChunk(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(8) // 32 KiB: less than a frame, so queued
	noRoots := func(context.Context, func(string, castore.Entry) error) error { return nil }
	if res, err := s.GC(ctx, GCOptions{Roots: noRoots}); err != nil || res.ChunksDeleted != 8 {
		t.Fatalf("collection: %d chunks deleted (%v), want 8", res.ChunksDeleted, err)
	}
	if packed, err := s.packOne(ctx, false); err != nil || packed {
		t.Fatalf("pack of deleted chunks only: packed %v (%v), want nothing", packed, err)
	}
	if q := s.queued.Load(); q != 0 {
		t.Fatalf("%d bytes counted queued after the recount, want 0", q)
	}
	put(20) // 80 KiB: the packer packs one frame, 16 KiB are left
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		s.packMu.Lock() // no pack in progress
		q := s.queued.Load()
		s.packMu.Unlock()
		if q < 64<<10 {
			if q != 16<<10 {
				t.Fatalf("%d bytes counted queued once the packer packed a frame, want the 16 KiB left", q)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes counted queued a minute after a frame's worth was written", q)
		}
	}
}

// openPackCountStore opens a store of 64 KiB frames for these tests.
func openPackCountStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "data"), Options{Frames: FrameOptions{Size: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// randomChunks returns n chunks of 4 KiB of random bytes.
func randomChunks(r *rand.Rand, n int) []castore.Chunk {
	chunks := make([]castore.Chunk, n)
	for i := range chunks {
		b := make([]byte, 4<<10)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		chunks[i] = castore.NewChunk(b)
	}
	return chunks
}
