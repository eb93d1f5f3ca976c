package pebblestore_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// listOrder is a CompactOptions.Order that lists order, as far as keep
// accepts it.
func listOrder(order []castore.Digest) func(context.Context, func(castore.Digest) bool) ([]castore.Digest, error) {
	return func(_ context.Context, keep func(castore.Digest) bool) ([]castore.Digest, error) {
		var out []castore.Digest
		for _, d := range order {
			if keep(d) {
				out = append(out, d)
			}
		}
		return out, nil
	}
}

// increment is what one step of a tiered series stores and expects the
// compaction after it to do.
type increment struct {
	rewrite int            // bytes rewritten, in increments' worth
	from    map[string]int // by source, in increments' worth
	level   int            // of the run written
	merged  []int          // levels of the runs merged
}

// TestCompactTiered: a series of increments of the same size compacted
// one after the other with a fan-out of 3 (neighbours not pulled: see
// TestCompactPullsNeighbours) rewrites only the new chunks
// until three runs of a level would exist, then merges them into one of
// the next level, exactly as a counter in base 3 carries; every chunk
// reads back byte for byte after each step and after a reopen.
func TestCompactTiered(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	const n = 6 // chunks per increment, 16 KiB each
	steps := []increment{
		{1, map[string]int{"hot": 1}, 0, nil},
		{1, map[string]int{"hot": 1}, 0, nil},
		{3, map[string]int{"hot": 1, "level0": 2}, 1, []int{0, 0}},
		{1, map[string]int{"hot": 1}, 0, nil},
		{1, map[string]int{"hot": 1}, 0, nil},
		{3, map[string]int{"hot": 1, "level0": 2}, 1, []int{0, 0}},
		{1, map[string]int{"hot": 1}, 0, nil},
		{1, map[string]int{"hot": 1}, 0, nil},
		{9, map[string]int{"hot": 1, "level0": 2, "level1": 6}, 2, []int{0, 0, 1, 1}},
		{1, map[string]int{"hot": 1}, 0, nil},
	}
	var (
		all     [][]byte
		ds      []castore.Digest
		total   uint64
		runs    = map[uint64]bool{}
		written uint64
	)
	for i, step := range steps {
		// Every increment is a new version of the same n chunks, of the
		// same size, so an increment's worth is the same every time.
		chunks := versionedChunks((i+1)%10, n) // one digit: the same size
		var size uint64
		for _, c := range chunks {
			size += uint64(len(c))
		}
		if i > 0 && size*uint64(len(steps)) != total/uint64(i)*uint64(len(steps)) {
			t.Fatalf("increment %d holds %d bytes, the first %d", i, size, total/uint64(i))
		}
		all = append(all, chunks...)
		ds = append(ds, putAll(t, s, chunks)...)
		total += size
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(ds), FanOut: 3, FrameSize: 64 << 10, Neighbours: -1})
		if err != nil {
			t.Fatalf("compaction %d: %v", i+1, err)
		}
		want := map[string]uint64{}
		for k, v := range step.from {
			want[k] = uint64(v) * size
		}
		var mergedLevels []int
		for _, r := range res.Merged {
			mergedLevels = append(mergedLevels, r.Level)
			if !runs[r.Run] {
				t.Errorf("compaction %d merged run %d, which no compaction wrote", i+1, r.Run)
			}
			delete(runs, r.Run)
		}
		if res.DecodedBytes != uint64(step.rewrite)*size || !maps.Equal(res.RewrittenFrom, want) ||
			res.Into == nil || res.Into.Level != step.level || !slices.Equal(mergedLevels, step.merged) {
			t.Fatalf("compaction %d: rewrote %d bytes from %v into %+v, merging levels %v;\nwant %d from %v into level %d, merging %v",
				i+1, res.DecodedBytes, res.RewrittenFrom, res.Into, mergedLevels, uint64(step.rewrite)*size, want, step.level, step.merged)
		}
		runs[res.Into.Run] = true
		written += res.DecodedBytes
		checkAll(t, s, ds, all)
		checkStoredBytes(t, s)
		t.Logf("compaction %d: %d bytes rewritten from %v into level %d (%d frames, %d stored)",
			i+1, res.DecodedBytes, res.RewrittenFrom, res.Into.Level, res.FramesOut, res.StoredOut)
	}
	// Runs left: levels 2, 0 (one each).
	if len(runs) != 2 {
		t.Fatalf("%d runs left, want 2", len(runs))
	}
	t.Logf("%d bytes stored; tiered compactions rewrote %d, a full rewrite each time would have rewritten %d",
		total, written, total*uint64(len(steps)+1)/2)

	// A dry run with nothing new: nothing to do.
	dry, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 3, DryRun: true})
	if err != nil || dry.Chunks != 0 || dry.Into != nil || len(dry.Merged) != 0 {
		t.Fatalf("dry run with nothing new = %+v, %v", dry, err)
	}
	// A smaller fan-out merges runs already there, without new chunks.
	dry, err = s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, DryRun: true})
	if err != nil || dry.Into != nil || dry.Chunks != 0 {
		t.Fatalf("dry run with fan-out 2 = %+v, %v; want nothing (one run per level)", dry, err)
	}

	// --full rewrites everything into one base run.
	full, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(ds), Full: true, FrameSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if full.DecodedBytes != total || full.Into == nil || full.Into.Level != pebblestore.LevelBase || full.Into.Run != 0 || len(full.Merged) != 2 {
		t.Fatalf("full compaction = %+v; want %d bytes into the base level, two runs merged", full, total)
	}
	s.Close()
	s = openFramed(t, dir)
	checkAll(t, s, ds, all)
	checkStoredBytes(t, s)
}

// TestCompactBaseRun: cold frames of no incremental run (written by a
// full compaction, byte for byte as before runs existed) stay as they are
// while increments (neighbours not pulled) are compacted and merged, read
// back, and join the rest
// in a full compaction.
func TestCompactBaseRun(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	base := versionedChunks(1, 8)
	ds := putAll(t, s, base)
	all := slices.Clone(base)
	res, err := s.Compact(ctx, pebblestore.CompactOptions{Full: true, FrameSize: 64 << 10})
	if err != nil || res.Into == nil || res.Into.Level != pebblestore.LevelBase {
		t.Fatalf("full compaction = %+v, %v", res, err)
	}
	var baseBytes uint64
	for _, c := range base {
		baseBytes += uint64(len(c))
	}
	for i, wantLevel := range []int{0, 1, 0, 2} {
		more := versionedChunks(i+2, 8)
		all = append(all, more...)
		ds = append(ds, putAll(t, s, more)...)
		res, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(ds), FanOut: 2, FrameSize: 64 << 10, Neighbours: -1})
		if err != nil {
			t.Fatal(err)
		}
		if res.Into == nil || res.Into.Level != wantLevel || res.RewrittenFrom["base"] != 0 {
			t.Fatalf("compaction %d = %+v; want a run of level %d, the base untouched", i+1, res, wantLevel)
		}
		checkAll(t, s, ds, all)
	}
	full, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(ds), Full: true, FrameSize: 64 << 10})
	if err != nil || full.RewrittenFrom["base"] != baseBytes || full.Into.Level != pebblestore.LevelBase {
		t.Fatalf("full compaction = %+v, %v; want the base's %d bytes rewritten", full, err, baseBytes)
	}
	checkAll(t, s, ds, all)
	checkStoredBytes(t, s)
}
