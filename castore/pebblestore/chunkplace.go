package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// ChunkPlace returns where chunk d is stored, without reading it, so that
// a reader of many chunks can read them frame by frame, each frame
// decoded once. A missing chunk is ErrNotFound.
func (s *Store) ChunkPlace(ctx context.Context, d castore.Digest) (castore.ChunkPlace, error) {
	var p castore.ChunkPlace
	db, err := s.acquire(ctx)
	if err != nil {
		return p, err
	}
	defer s.mu.RUnlock()
	err = get(ctx, db, pebbleKey(pebbleKindChunk, d), "chunk", func(v []byte) error {
		if len(v) == 0 || v[0] != CodecFrame {
			return nil
		}
		r, err := decodeFrameRef(v)
		if err != nil {
			return fmt.Errorf("chunk %s: %w", d, err)
		}
		p = castore.ChunkPlace{Framed: true, Frame: r.frame, Offset: r.offset, Length: r.length}
		return nil
	})
	if errors.Is(err, errNoKey) {
		return p, fmt.Errorf("%w: chunk %s", castore.ErrNotFound, d)
	}
	return p, err
}
