package castore

import (
	"context"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ChunkPlace is where a stored chunk lives: in a frame (Framed, with the
// frame's name and the chunk's offset in it), or inline in the index.
type ChunkPlace struct {
	Framed bool
	Frame  Digest
	Offset uint32
}

// ChunkPlace returns where chunk d is stored, without reading it, so that
// a reader of many chunks can read them frame by frame, each frame
// decoded once. A missing chunk is ErrNotFound.
func (s *PebbleStore) ChunkPlace(ctx context.Context, d Digest) (ChunkPlace, error) {
	var p ChunkPlace
	db, err := s.acquire(ctx)
	if err != nil {
		return p, err
	}
	defer s.mu.RUnlock()
	err = get(db, pebbleKey(pebbleKindChunk, d), "chunk", func(v []byte) error {
		if len(v) == 0 || v[0] != CodecFrame {
			return nil
		}
		r, err := decodeFrameRef(v)
		if err != nil {
			return fmt.Errorf("chunk %s: %w", d, err)
		}
		p = ChunkPlace{Framed: true, Frame: r.frame, Offset: r.offset}
		return nil
	})
	if errors.Is(err, pebble.ErrNotFound) {
		return p, fmt.Errorf("%w: chunk %s", ErrNotFound, d)
	}
	return p, err
}
