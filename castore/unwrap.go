package castore

import "context"

// Wrapper is a store that decorates another: verifying, counting,
// read-only, retrying, read-through. Unwrap returns the store it wraps, so
// that an optional power of the store underneath (see [As]) stays
// reachable through any number of wrappers.
type Wrapper interface {
	Unwrap() any
}

// maxUnwrap bounds the wrappers As walks, against a cycle.
const maxUnwrap = 64

// As finds a power T in s or in the stores s wraps: it returns s as a T
// when s implements T, else looks at s.Unwrap(), and so on down the chain.
// The first store that has the power answers, so a wrapper that must see
// a power's calls (a read-only wrapper refusing DeleteChunk, a counting
// one counting PutEncodedChunk) implements that power itself. A power is
// an interface: [EncodedChunkStore], [ChunkDeleter], [ChunkScanner],
// [Packer], [Stater], [Syncer], or any other.
//
// Callers find powers with As, never by asserting on the outer value or
// reaching through a wrapper's fields.
func As[T any](s any) (T, bool) {
	for range maxUnwrap {
		if t, ok := s.(T); ok {
			return t, true
		}
		w, ok := s.(Wrapper)
		if !ok {
			break
		}
		if s = w.Unwrap(); s == nil {
			break
		}
	}
	var zero T
	return zero, false
}

// ChunkDeleter is the optional power of removing chunks, for caches that
// evict what they can fetch again.
type ChunkDeleter interface {
	// DeleteChunk removes chunk d, reporting whether it was there.
	// Deleting a missing chunk is not an error: it reports false.
	DeleteChunk(ctx context.Context, d Digest) (bool, error)
}

// ChunkScanner is the optional power of listing every stored chunk.
type ChunkScanner interface {
	// ScanChunks calls fn with the digest and uncompressed size of every
	// stored chunk, in ascending digest order, and stops at fn's first
	// error, returning it.
	ScanChunks(ctx context.Context, fn func(d Digest, size int) error) error
}

// Packer is the optional power of a store that packs chunks into frames
// in the background: PackPending packs every chunk waiting for it.
type Packer interface {
	PackPending(ctx context.Context) error
}

// Flusher is the optional power of a store with an in-memory write
// buffer: Flush writes it out (pebblestore.Store: packs pending chunks and
// flushes the memtable).
type Flusher interface {
	Flush(ctx context.Context) error
}

// DiskUser is the optional power of a store on disk: DiskBytes is the
// space allocated to its files, as du counts it.
type DiskUser interface {
	DiskBytes() (int64, error)
}
