package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

var _ castore.EncodedChunkStore = (*Store)(nil)

// GetEncodedChunk implements EncodedChunkStore.
func (s *Store) GetEncodedChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return dst, err
	}
	defer s.mu.RUnlock()
	out := dst
	framed := false
	err = get(ctx, db, pebbleKey(pebbleKindChunk, d), "chunk", func(v []byte) error {
		if framed = len(v) > 0 && v[0] == CodecFrame; !framed {
			out = append(dst, v...)
		}
		return nil
	})
	if errors.Is(err, errNoKey) {
		return dst, fmt.Errorf("%w: chunk %s", castore.ErrNotFound, d)
	}
	if err != nil {
		return dst, err
	}
	if framed {
		// A chunk in a frame has no stored form of its own: send it raw.
		out, err := s.getChunk(ctx, db, d, append(dst, castore.CodecRaw))
		if err != nil {
			return dst, err
		}
		return out, nil
	}
	return out, nil
}

// PutEncodedChunk implements EncodedChunkStore. Like PutChunk, it writes
// the chunk with its counters under the digest's lock stripe, unsynced.
func (s *Store) PutEncodedChunk(ctx context.Context, d castore.Digest, stored []byte) (bool, error) {
	c, release, err := castore.VerifyEncoded(d, stored)
	if err != nil {
		return false, err
	}
	defer release()
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	if ok, err := s.useChunk(ctx, db, d); err != nil || ok {
		return false, err
	}
	return s.putStoredChunk(ctx, db, d, len(c.Data()), stored)
}
