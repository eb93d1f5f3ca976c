package pebblestore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nixcas/nixcas/castore"
)

// Pulling neighbours: a run of new chunks compresses only against itself,
// so a new version of a file whose earlier versions lie in older runs
// would be stored almost whole until the runs merge (a rebuild that
// rewrites every store path reference adds most of its size). Given the
// chunks of the new chunks' files and of their other versions side by
// side (CompactOptions.Neighbourhood, or Order listing every chunk of the
// store), the cold frames that hold the neighbours of the new chunks in
// that order, their earlier versions, are pulled into the compaction:
// rewritten with the new chunks, so that both land in the same frames.
// Reads are unchanged (every frame decodes on its own); the cost is
// rewriting, at most opts.Neighbours times the new bytes per compaction.

// pullNeighbours adds to sources the cold frames (not already taken) that
// hold the chunks next to a new chunk in order, those named by most new
// chunks first, up to opts.Neighbours times the new chunks' bytes, and
// returns their decoded bytes. new holds the chunks chosen so far.
func (s *Store) pullNeighbours(ctx context.Context, order []castore.Digest, new map[castore.Digest]*compactChunk, sources *compactSet, opts CompactOptions) (uint64, error) {
	var newBytes uint64
	for _, c := range new {
		newBytes += uint64(c.size)
	}
	budget := uint64(opts.Neighbours * float64(newBytes))
	if budget == 0 {
		return 0, nil
	}
	// The nearest chunk before and after each new one that is not new:
	// one pass each way, so that a long stretch of new chunks costs no
	// more than its length.
	near := make(map[castore.Digest]int)
	countNearest := func(seq func(yield func(int, castore.Digest) bool)) {
		var last castore.Digest
		have := false
		for _, d := range seq {
			switch {
			case new[d] == nil:
				last, have = d, true
			case have:
				near[last]++
			}
		}
	}
	countNearest(slices.All(order))
	countNearest(slices.Backward(order))
	db, err := s.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	hits := make(map[castore.Digest]int) // cold frame → new chunks next to one of its chunks
	for d, n := range near {
		err := get(ctx, db, pebbleKey(pebbleKindChunk, d), "chunk", func(v []byte) error {
			if len(v) == 0 || v[0] != CodecFrame {
				return nil
			}
			r, err := decodeFrameRef(v)
			if err != nil {
				return fmt.Errorf("chunk %s: %w", d, err)
			}
			if f := sources.coldFrames[r.frame]; f != nil && sources.byName[r.frame] == nil {
				hits[r.frame] += n
			}
			return nil
		})
		if err != nil && !errors.Is(err, errNoKey) {
			return 0, err
		}
	}
	frames := slices.SortedFunc(maps.Keys(hits), func(a, b castore.Digest) int {
		return cmp.Or(cmp.Compare(hits[b], hits[a]), bytes.Compare(a[:], b[:]))
	})
	var pulled uint64
	for _, name := range frames {
		f := sources.coldFrames[name]
		if pulled+f.decoded > budget {
			continue
		}
		pulled += f.decoded
		sources.byName[name] = f
		sources.order = append(sources.order, f)
		sources.pulled = append(sources.pulled, f)
	}
	return pulled, nil
}

// full reports whether the compaction chosen rewrites every cold frame.
func (set *compactSet) full() bool {
	return set.into.Level == LevelBase
}

// rescanChunks finds the chunks to rewrite again, once frames were added
// to sources.
func (s *Store) rescanChunks(ctx context.Context, sources *compactSet) (map[castore.Digest]*compactChunk, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	return s.compactChunks(ctx, db, sources)
}
