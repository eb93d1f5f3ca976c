package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// DeleteChunk removes chunk d, reporting whether it was there, and takes
// it off the counters (Chunks, UniqueChunkBytes, and StoredBytes for a
// chunk not yet packed in a frame: a frame's bytes stay until compaction
// rewrites it). Blob indexes
// and directories naming the chunk stay: reading them back then fails with
// ErrNotFound for the chunk. It is meant for caches, which evict chunks
// they can fetch again. Safe for concurrent use; the write is not synced.
func (s *Store) DeleteChunk(ctx context.Context, d castore.Digest) (bool, error) {
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	mu := s.stripe(d)
	mu.Lock()
	defer mu.Unlock()
	key := pebbleKey(pebbleKindChunk, d)
	var size, stored int
	err = get(ctx, db, key, "chunk "+d.String(), func(v []byte) (err error) {
		if len(v) > 0 && v[0] != CodecFrame { // a frame's bytes stay until compaction
			stored = len(v)
		}
		size, err = storedChunkSize(v)
		return err
	})
	if errors.Is(err, errNoKey) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Counters are summed modulo 2^64: adding -x subtracts x.
	var delta [numCounters]uint64
	delta[counterUniqueChunkBytes] = -uint64(size)
	delta[counterStoredBytes] = -uint64(stored)
	delta[counterChunks] = ^uint64(0)
	b := db.newBatch()
	defer b.close()
	b.delete(key)
	b.addCounters(delta[:])
	if err := b.commit(ctx, false); err != nil {
		return false, pebbleError(err, "delete chunk "+d.String())
	}
	s.places.forget(d)
	return true, nil
}

// ScanChunks calls fn with the digest and uncompressed size of every
// stored chunk, in digest order. It stops at fn's first error and returns
// it. It reads every chunk's stored form.
func (s *Store) ScanChunks(ctx context.Context, fn func(d castore.Digest, size int) error) error {
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	lower := []byte{pebbleKindChunk}
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return pebbleError(err, "scan chunks")
	}
	for it.First(); it.Valid(); it.Next() {
		if err = ctx.Err(); err != nil {
			break
		}
		var d castore.Digest
		if len(it.Key()) != 1+castore.DigestSize {
			err = fmt.Errorf("%w: chunk key of %d bytes", castore.ErrCorrupt, len(it.Key()))
			break
		}
		copy(d[:], it.Key()[1:])
		var v []byte
		if v, err = it.ValueAndErr(); err != nil {
			err = pebbleError(err, "scan chunks")
			break
		}
		var size int
		if size, err = storedChunkSize(v); err != nil {
			err = fmt.Errorf("chunk %s: %w", d, err)
			break
		}
		if err = fn(d, size); err != nil {
			break
		}
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = pebbleError(cerr, "scan chunks")
	}
	return err
}
