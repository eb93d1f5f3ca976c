package pebblestore_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// TestCompactPullsNeighbours: a new version of a file whose earlier
// version is in a run of cold frames is compacted, in the order that puts
// the versions side by side, once with neighbours pulled and once
// without. Pulled, the cold frames of the earlier version are rewritten
// with the new chunks (within the budget) and the new version adds less
// than half what it adds compressed on its own; every chunk reads back,
// and the pulled frames are gone.
func TestCompactPullsNeighbours(t *testing.T) {
	ctx := context.Background()
	v0, v1 := versionedChunks(0, 24), versionedChunks(2, 24)
	var order []castore.Digest
	var newBytes uint64
	for i := range v0 {
		order = append(order, castore.Hash(v0[i]), castore.Hash(v1[i]))
		newBytes += uint64(len(v1[i]))
	}
	added := map[string]uint64{}
	for _, mode := range []struct {
		name          string
		neighbours    float64
		neighbourhood bool // listed by Neighbourhood, not Order with every chunk
	}{{"off", -1, false}, {"order", 2, false}, {"neighbourhood", 2, true}} {
		neighbours := mode.neighbours
		s := openFramed(t, t.TempDir())
		put := func(chunks [][]byte) {
			for _, c := range chunks {
				if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
					t.Fatal(err)
				}
			}
		}
		opts := pebblestore.CompactOptions{Order: listOrder(order), FanOut: 4, FrameSize: 64 << 10, Neighbours: neighbours}
		if mode.neighbourhood {
			opts.Neighbourhood = listNeighbourhood(order)
		}
		put(v0)
		if _, err := s.Compact(ctx, opts); err != nil {
			t.Fatal(err)
		}
		before, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		put(v1)
		res, err := s.Compact(ctx, opts)
		if err != nil || res.Into == nil || res.Into.Level != 0 {
			t.Fatalf("Compact of the new version (neighbours %g) = %+v, %v; want a run of level 0", neighbours, res, err)
		}
		switch {
		case neighbours < 0 && (res.FramesPulled != 0 || res.RewrittenFrom["level0"] != 0):
			t.Fatalf("neighbours off: %d frames pulled, %v rewritten", res.FramesPulled, res.RewrittenFrom)
		case neighbours > 0 && (res.FramesPulled == 0 || res.PulledBytes > uint64(neighbours*float64(newBytes)) || res.RewrittenFrom["level0"] != res.PulledBytes || res.FramesDeleted < res.FramesPulled):
			t.Fatalf("neighbours %g: %d frames of %d bytes pulled (budget %g × %d), %v rewritten, %d frames deleted",
				neighbours, res.FramesPulled, res.PulledBytes, neighbours, newBytes, res.RewrittenFrom, res.FramesDeleted)
		}
		after, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		added[mode.name] = after.StoredBytes - before.StoredBytes
		for _, c := range append(append([][]byte{}, v0...), v1...) {
			if got, err := s.GetChunk(ctx, castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
				t.Fatalf("GetChunk (neighbours %g): %d bytes, %v", neighbours, len(got), err)
			}
		}
	}
	t.Logf("the new version (%d bytes) added %d bytes compacted on its own, %d with its neighbours pulled (%d listed by Neighbourhood)", newBytes, added["off"], added["order"], added["neighbourhood"])
	if added["order"]*2 > added["off"] || added["neighbourhood"] != added["order"] {
		t.Fatalf("with neighbours pulled the new version added %d bytes (%d listed by Neighbourhood), not less than half of %d", added["order"], added["neighbourhood"], added["off"])
	}
}

// TestCompactNeighboursSkippedOnLargeStores: a store holding more chunks
// than the bound on listing them all pulls no neighbours, and says so;
// given Neighbourhood, which lists only the new chunks' files, it pulls
// them whatever its size.
func TestCompactNeighboursSkippedOnLargeStores(t *testing.T) {
	ctx := context.Background()
	defer pebblestore.SetNeighboursMaxChunks(10)()
	v0, v1 := versionedChunks(0, 24), versionedChunks(2, 24)
	var order []castore.Digest
	for i := range v0 {
		order = append(order, castore.Hash(v0[i]), castore.Hash(v1[i]))
	}
	s := openFramed(t, t.TempDir())
	opts := pebblestore.CompactOptions{Order: listOrder(order), FanOut: 4, FrameSize: 64 << 10}
	for i, version := range [][][]byte{v0, v1} {
		for _, c := range version {
			if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := s.Compact(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && (!res.NeighboursSkipped || res.FramesPulled != 0) {
			t.Fatalf("Compact of a store of %d chunks, bound 10: neighbours skipped %v, %d frames pulled", 2*len(v0), res.NeighboursSkipped, res.FramesPulled)
		}
	}
	readsBack(t, s, v0, v1)

	// With Neighbourhood, which lists only the new chunks' files, the
	// bound does not apply.
	s = openFramed(t, t.TempDir())
	opts.Neighbourhood = listNeighbourhood(order)
	for i, version := range [][][]byte{v0, v1} {
		for _, c := range version {
			if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
				t.Fatal(err)
			}
		}
		res, err := s.Compact(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 && (res.NeighboursSkipped || res.FramesPulled == 0) {
			t.Fatalf("Compact with Neighbourhood of a store of %d chunks, bound 10: neighbours skipped %v, %d frames pulled", 2*len(v0), res.NeighboursSkipped, res.FramesPulled)
		}
	}
	readsBack(t, s, v0, v1)
}

// readsBack reads back every chunk of the versions.
func readsBack(t *testing.T, s *pebblestore.Store, versions ...[][]byte) {
	t.Helper()
	for _, v := range versions {
		for _, c := range v {
			if got, err := s.GetChunk(context.Background(), castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
				t.Fatalf("GetChunk: %d bytes, %v", len(got), err)
			}
		}
	}
}

// listNeighbourhood is a CompactOptions.Neighbourhood for chunks of one
// file in order: all of them when one is new.
func listNeighbourhood(order []castore.Digest) func(context.Context, func(castore.Digest) bool) ([]castore.Digest, error) {
	return func(_ context.Context, isNew func(castore.Digest) bool) ([]castore.Digest, error) {
		if slices.ContainsFunc(order, isNew) {
			return order, nil
		}
		return nil, nil
	}
}
