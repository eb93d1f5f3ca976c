package narrender

import (
	"context"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// readChunk reads the chunk ref from s into dst's storage (dst[:0]; nil
// is fine) and checks that it has the size ref says: a chunk of another
// size is castore.ErrCorrupt, naming the chunk. The slice returned may
// be a new one; keep it as the next call's dst.
func readChunk(ctx context.Context, s Store, ref castore.ChunkRef, dst []byte) ([]byte, error) {
	buf, err := s.GetChunk(ctx, ref.Digest, dst[:0])
	if err != nil {
		return buf, err
	}
	if len(buf) != int(ref.Size) {
		return buf, fmt.Errorf("%w: chunk %s has %d bytes, want %d", castore.ErrCorrupt, ref.Digest, len(buf), ref.Size)
	}
	return buf, nil
}
