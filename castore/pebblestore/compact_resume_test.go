package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// crashingObjects is the store's frame files, with a switch that makes
// every sync fail, as a crash after a frame is written and before the
// chunks are switched to it would leave the store.
type crashingObjects struct {
	*pebblestore.DirObjects
	crash atomic.Bool
}

var errCrash = errors.New("simulated crash before the switch")

func (o *crashingObjects) SyncObjects(ctx context.Context) error {
	if o.crash.Load() {
		return errCrash
	}
	return o.DirObjects.SyncObjects(ctx)
}

// TestCompactResumesInterruptedMerge: a compaction merging a run of level 0
// with new chunks into level 1 stops (a) after writing its first frames and
// before switching any chunk to them, (b) after some frames were written
// and switched (cancelled). Reopened, the store reports work although its
// hot frames are younger than OlderThan (no new data arrived), and the
// next compaction takes the merge up again: one run of level 1 made of
// every chunk (the part already written in (b) merged in, not left as a
// run of its own), every chunk read back, and nothing left to do.
func TestCompactResumesInterruptedMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		// partial: frames of the run were switched to before the stop,
		// so the resumed merge reads some chunks from level 1.
		partial   bool
		interrupt func(ctx context.Context, s *pebblestore.Store, objects *crashingObjects) error
	}{
		{"frames written, not switched", false, func(ctx context.Context, s *pebblestore.Store, objects *crashingObjects) error {
			objects.crash.Store(true)
			_, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, FrameSize: 64 << 10})
			if !errors.Is(err, errCrash) {
				t.Fatalf("Compact with failing syncs = %v, want the simulated crash", err)
			}
			return nil
		}},
		{"some frames switched", true, func(ctx context.Context, s *pebblestore.Store, _ *crashingObjects) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			_, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, FrameSize: 64 << 10, DutyCycle: 0.9,
				Progress: func(done, total int64) { cancel() }})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Compact cancelled after its first frame = %v, want context.Canceled", err)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			objects := &crashingObjects{DirObjects: pebblestore.NewDirObjects(filepath.Join(dir, "frames"))}
			opts := framedOptions
			opts.Objects = objects
			s, err := pebblestore.Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			var all [][]byte
			var sizes [2]uint64
			for v := range 2 {
				for _, c := range versionedChunks(v, 40) {
					all = append(all, c)
					sizes[v] += uint64(len(c))
					if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
						t.Fatal(err)
					}
				}
				if v == 0 {
					res, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, FrameSize: 64 << 10})
					if err != nil || res.Into == nil || res.Into.Level != 0 {
						t.Fatalf("first Compact = %+v, %v; want a run of level 0", res, err)
					}
				}
			}
			if err := s.PackPending(ctx); err != nil {
				t.Fatal(err)
			}
			young := pebblestore.CompactOptions{OlderThan: time.Hour, FanOut: 2, FrameSize: 64 << 10}
			if due, err := s.CompactDue(ctx, young); err != nil || due {
				t.Fatalf("CompactDue before the merge, hot frames young = %v, %v; want false", due, err)
			}
			if err := tc.interrupt(ctx, s, objects); err != nil {
				t.Fatal(err)
			}
			objects.crash.Store(false)
			if err := s.Close(); err != nil && !errors.Is(err, errCrash) {
				t.Fatal(err)
			}

			s = openFramed(t, dir)
			if due, err := s.CompactDue(ctx, young); err != nil || !due {
				t.Fatalf("CompactDue after the interrupted merge, no new data, hot frames young = %v, %v; want true", due, err)
			}
			res, err := s.Compact(ctx, young)
			if err != nil || res.Into == nil || res.Into.Level != 1 {
				t.Fatalf("resumed Compact = %+v, %v; want a run of level 1", res, err)
			}
			var rewritten uint64
			for _, n := range res.RewrittenFrom {
				rewritten += n
			}
			if rewritten != sizes[0]+sizes[1] || res.DecodedBytes != rewritten {
				t.Fatalf("resumed Compact rewrote %v (%d bytes); want every chunk once, %d bytes", res.RewrittenFrom, res.DecodedBytes, sizes[0]+sizes[1])
			}
			if tc.partial != (res.RewrittenFrom["level1"] > 0) || !tc.partial && res.RewrittenFrom["hot"] != sizes[1] {
				t.Fatalf("resumed Compact rewrote %v; want the part of level 1 already written: %v", res.RewrittenFrom, tc.partial)
			}
			if due, err := s.CompactDue(ctx, pebblestore.CompactOptions{FanOut: 2}); err != nil || due {
				t.Fatalf("CompactDue after the resumed merge = %v, %v; want false", due, err)
			}
			dry, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, DryRun: true})
			if err != nil || dry.Into != nil || len(dry.Merged) != 0 {
				t.Fatalf("dry run after the resumed merge = %+v, %v; want nothing to do", dry, err)
			}
			for _, c := range all {
				if got, err := s.GetChunk(ctx, castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
					t.Fatalf("GetChunk after the resumed merge: %d bytes, %v", len(got), err)
				}
			}
			st, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if files, size := frameFiles(t, dir); uint64(len(files)) != st.Frames || uint64(size) != st.StoredBytes {
				t.Fatalf("%d frame files of %d bytes on disk; Stats counts %d frames of %d bytes", len(files), size, st.Frames, st.StoredBytes)
			}
		})
	}
}
