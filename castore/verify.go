package castore

import "context"

// Verifying wraps s so that every chunk read through GetChunk is re-hashed
// and checked against its digest: for stores whose medium is not trusted.
// (Pebble checksums its own blocks and files, so a local pebblestore.Store does
// not need it; a store reached over a network does.)
func Verifying(s Store) Store { return verifying{s} }

type verifying struct{ Store }

// Unwrap returns the store v verifies.
func (v verifying) Unwrap() any { return v.Store }

// GetChunk implements ChunkStore, failing with ErrCorrupt on a mismatch.
func (v verifying) GetChunk(ctx context.Context, d Digest, dst []byte) ([]byte, error) {
	start := len(dst)
	out, err := v.Store.GetChunk(ctx, d, dst)
	if err != nil {
		return out, err
	}
	if _, err := VerifyChunk(d, out[start:]); err != nil {
		return dst, err
	}
	return out, nil
}

// ChunkFiles hides the ChunkFiler power of the store v verifies: a chunk
// sent from a file would not be hashed.
func (v verifying) ChunkFiles() ChunkFiles { return NoChunkFiles{} }
