package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nixcas/nixcas/castore"
)

// ChunkPlace returns where chunk d is stored, without reading it, so that
// a reader of many chunks can read them frame by frame, each frame
// decoded once. A missing chunk is ErrNotFound. It always asks the index
// (never the places remembered): verify and pulls want what it says now.
func (s *Store) ChunkPlace(ctx context.Context, d castore.Digest) (castore.ChunkPlace, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return castore.ChunkPlace{}, err
	}
	defer s.mu.RUnlock()
	r, framed, err := lookupChunk(ctx, db, d, nil)
	switch {
	case errors.Is(err, errNoKey):
		return castore.ChunkPlace{}, fmt.Errorf("%w: chunk %s", castore.ErrNotFound, d)
	case err != nil || !framed:
		return castore.ChunkPlace{}, err
	}
	return castore.ChunkPlace{Framed: true, Frame: r.frame, Offset: r.offset, Length: r.length}, nil
}

// lookupChunk reads chunk d's record in the chunk index of db: the one
// look-up of a chunk that ChunkPlace, framePlace and getChunk share. For
// a chunk in a frame it returns its place (framed); for a chunk stored
// inline it calls inline (when not nil) with the stored value, valid only
// during the call, and returns inline's error. A missing chunk is errNoKey.
func lookupChunk(ctx context.Context, db kvDB, d castore.Digest, inline func(v []byte) error) (r frameRef, framed bool, err error) {
	err = get(ctx, db, pebbleKey(pebbleKindChunk, d), "chunk", func(v []byte) error {
		if len(v) > 0 && v[0] == CodecFrame {
			framed = true
			var err error
			if r, err = decodeFrameRef(v); err != nil {
				return fmt.Errorf("chunk %s: %w", d, err)
			}
			return nil
		}
		if inline != nil {
			return inline(v)
		}
		return nil
	})
	return r, framed, err
}

// Places of chunks in memory
//
// A warm render reads each chunk with one pread of a decoded file (see
// decoded.go); the look-up of the chunk's place in the index (a Pebble
// get: an iterator over the memtables and every level) cost more CPU than
// that read. So a Store remembers the places of the chunks it read from
// frames, in memory, bounded (placeCacheEntries, about 90 bytes each), an
// arbitrary one out when full. A place stays right as long as its frame
// exists, frames being immutable and named by their bytes: every
// retirement of a frame (compaction, collection) and every deletion of a
// chunk empties the cache, and a read that fails from a remembered place
// looks the chunk up again. A generation number, moved by each of these,
// keeps a reader that looked a chunk up before them from remembering
// what it found after them.
//
// Only a store that alone changes its database remembers places (Open,
// writable): a read-only open beside a server, or a store whose records
// are in PostgreSQL, would not hear of another process's compactions.
//
// A writable store whose records are in PostgreSQL keeps places only to
// hand them on (handoff): ChunkFiles looks a chunk's place up to find its
// decoded file, and when there is none the reader reads the chunk with
// GetChunk next, which takes the place ChunkFiles left (once) rather than
// asking the database again, a round trip each. A place so handed on is
// at most as old as the reader's own look-up would have been a moment
// before, and a read from it that fails (its frame retired meanwhile by
// another server) asks the database, as for a remembered place.

// placeCacheEntries bounds the places a Store remembers, and
// placeHandoffEntries those it hands on (the chunks of a few renders'
// read-ahead).
const (
	placeCacheEntries   = 1 << 18
	placeHandoffEntries = 1 << 12
)

// placeCache remembers chunk places (see above). A nil *placeCache
// remembers nothing.
type placeCache struct {
	mu     sync.RWMutex
	gen    uint64
	places map[castore.Digest]frameRef
	max    int
	// handoff: places are not remembered, only handed from ChunkFiles to
	// the GetChunk that follows (handOff, take).
	handoff bool
}

func newPlaceCache(max int) *placeCache {
	return &placeCache{places: make(map[castore.Digest]frameRef), max: max}
}

// newPlaceHandoff returns a placeCache that only hands places on.
func newPlaceHandoff(max int) *placeCache {
	c := newPlaceCache(max)
	c.handoff = true
	return c
}

// lookup returns the remembered place of chunk d.
func (c *placeCache) lookup(d castore.Digest) (frameRef, bool) {
	if c == nil || c.handoff {
		return frameRef{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.places[d]
	return r, ok
}

// generation returns the generation to pass to add for a place about to
// be looked up in the index.
func (c *placeCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// add remembers that chunk d is at r, as the index said when the cache
// was at generation gen; nothing when a frame was retired or a chunk
// deleted since.
func (c *placeCache) add(d castore.Digest, r frameRef, gen uint64) {
	if c == nil || c.handoff {
		return
	}
	c.put(d, r, gen)
}

// handOff leaves chunk d's place r, looked up at generation gen, for the
// next take of d, when c only hands places on.
func (c *placeCache) handOff(d castore.Digest, r frameRef, gen uint64) {
	if c == nil || !c.handoff {
		return
	}
	c.put(d, r, gen)
}

// take returns, once, the place of chunk d that handOff left.
func (c *placeCache) take(d castore.Digest) (frameRef, bool) {
	if c == nil || !c.handoff {
		return frameRef{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.places[d]
	if ok {
		delete(c.places, d)
	}
	return r, ok
}

// put stores d's place unless generations turned since gen, making room
// first.
func (c *placeCache) put(d castore.Digest, r frameRef, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.places[d]; !ok && len(c.places) >= c.max {
		for old := range c.places {
			delete(c.places, old)
			break
		}
	}
	c.places[d] = r
}

// reset forgets every place: a frame was retired or chunks deleted.
func (c *placeCache) reset() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.places)
}

// forget forgets the place of chunk d (deleted, or not found where
// remembered).
func (c *placeCache) forget(d castore.Digest) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.places, d)
}

// len returns the number of places remembered.
func (c *placeCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.places)
}

// framePlace returns the place of chunk d when it is in a frame: the one
// remembered, else the index's (then remembered). ok is false for a chunk
// stored inline, missing, or that cannot be looked up.
func (s *Store) framePlace(ctx context.Context, d castore.Digest) (r frameRef, ok bool) {
	if r, ok := s.places.lookup(d); ok {
		return r, true
	}
	db, err := s.acquire(ctx)
	if err != nil {
		return r, false
	}
	defer s.mu.RUnlock()
	gen := s.places.generation()
	r, framed, err := lookupChunk(ctx, db, d, nil)
	if err != nil || !framed {
		return r, false
	}
	s.places.add(d, r, gen)
	return r, true
}
