package castore

import (
	"context"
	"fmt"
	"sync"
)

// EncodedChunkStore is an optional power of a ChunkStore: chunks in their
// stored form (codec byte + payload, see [ChunkEncoder]), so that a chunk
// can go from one store to another, across a network, without being
// decompressed and compressed again. Discover it with [As]; a wrapper that
// changes what a put does (counting, read-only) implements it itself.
type EncodedChunkStore interface {
	// GetEncodedChunk appends the chunk's stored form to dst and returns
	// the result, which the caller owns. A missing chunk is ErrNotFound.
	// Nothing is decoded or verified: a receiver decodes with DecodeChunk
	// and checks with VerifyChunk (or hands it to PutEncodedChunk, which
	// does both).
	GetEncodedChunk(ctx context.Context, d Digest, dst []byte) ([]byte, error)
	// PutEncodedChunk decodes stored, checks the bytes against d with
	// VerifyChunk, and stores the chunk in the form given unless it is
	// already there, reporting whether it was added. A chunk that does not
	// decode or does not hash to d is an error wrapping ErrCorrupt, and
	// nothing is stored. Idempotent and safe for concurrent use, as
	// PutChunk; stored is not kept after the call.
	PutEncodedChunk(ctx context.Context, d Digest, stored []byte) (added bool, err error)
}

var (
	_ EncodedChunkStore = (*MemoryStore)(nil)
)

// decodeBuffers holds buffers for decoding received chunks.
var decodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// VerifyEncoded decodes stored into a pooled buffer and verifies it against
// d, returning the chunk and a function giving the buffer back, to be
// called once the chunk is no longer used. A backend's PutEncodedChunk
// goes through it.
func VerifyEncoded(d Digest, stored []byte) (Chunk, func(), error) {
	buf := decodeBuffers.Get().(*[]byte)
	release := func() {
		if cap(*buf) <= 1<<20 {
			decodeBuffers.Put(buf)
		}
	}
	data, err := DecodeChunk((*buf)[:0], stored)
	*buf = data[:0]
	if err != nil {
		release()
		return Chunk{}, nil, fmt.Errorf("chunk %s: %w", d, err)
	}
	c, err := VerifyChunk(d, data)
	if err == nil {
		err = c.Check()
	}
	if err != nil {
		release()
		return Chunk{}, nil, err
	}
	return c, release, nil
}

// GetEncodedChunk implements EncodedChunkStore.
func (m *MemoryStore) GetEncodedChunk(_ context.Context, d Digest, dst []byte) ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	stored, ok := m.chunks[d]
	if !ok {
		return dst, fmt.Errorf("%w: chunk %s", ErrNotFound, d)
	}
	return append(dst, stored...), nil
}

// PutEncodedChunk implements EncodedChunkStore.
func (m *MemoryStore) PutEncodedChunk(_ context.Context, d Digest, stored []byte) (bool, error) {
	c, release, err := VerifyEncoded(d, stored)
	if err != nil {
		return false, err
	}
	size := len(c.data)
	release()
	return m.putStored(d, size, append([]byte(nil), stored...)), nil
}

// GetEncoded appends the stored form of chunk d to dst: through the
// GetEncodedChunk of s or of the first store under it that has one (see
// [As]), else as a copy of GetChunk's bytes coded CodecRaw.
func GetEncoded(ctx context.Context, s ChunkReader, d Digest, dst []byte) ([]byte, error) {
	if enc, ok := As[EncodedChunkStore](s); ok {
		return enc.GetEncodedChunk(ctx, d, dst)
	}
	start := len(dst)
	out, err := s.GetChunk(ctx, d, append(dst, CodecRaw))
	if err != nil {
		return dst[:start], err
	}
	return out, nil
}

// PutEncoded stores a chunk received in its stored form: through the
// PutEncodedChunk of s or of the first store under it that has one (see
// [As]) when the chunk is compressed, else
// decoded, verified (VerifyChunk) and put with PutChunk, so that a chunk
// coded CodecRaw is coded the store's way (lz4 where that helps). Either
// way a chunk that does not hash to d is an error wrapping ErrCorrupt and
// is not stored.
func PutEncoded(ctx context.Context, s ChunkStore, d Digest, stored []byte) (bool, error) {
	if enc, ok := As[EncodedChunkStore](s); ok && len(stored) > 0 && stored[0] != CodecRaw {
		return enc.PutEncodedChunk(ctx, d, stored)
	}
	c, release, err := VerifyEncoded(d, stored)
	if err != nil {
		return false, err
	}
	defer release()
	return s.PutChunk(ctx, c)
}
