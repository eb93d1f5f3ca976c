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
	s, err := Open(filepath.Join(t.TempDir(), "data"), Options{Frames: FrameOptions{Size: 64 << 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.queued.Add(10 * s.maxPackLag) // what another process packed
	r := rand.New(rand.NewPCG(1, 2))
	var chunks []castore.Chunk
	done := make(chan error, 1)
	for range 64 { // 256 KiB: four frames
		b := make([]byte, 4<<10)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		chunks = append(chunks, castore.NewChunk(b))
	}
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
