package castore

import (
	"context"
	"fmt"
)

// Chunk is a piece of data together with its digest. The only ways to make
// one are [NewChunk], which hashes, and [VerifyChunk], which hashes and
// compares, so a store never receives a chunk whose digest was not computed
// from its bytes.
type Chunk struct {
	digest Digest
	data   []byte
	ok     bool // made by a constructor, not a zero value
}

// NewChunk hashes data. The chunk refers to data; do not modify it while
// the chunk is in use.
func NewChunk(data []byte) Chunk { return Chunk{digest: Hash(data), data: data, ok: true} }

// Check refuses what no store accepts: a Chunk no constructor made (the
// zero value), and chunks over MaxChunkSize. Every backend calls it first
// in PutChunk.
func (c Chunk) Check() error {
	switch {
	case !c.ok:
		return fmt.Errorf("%w: chunk not made by NewChunk or VerifyChunk", ErrInvalid)
	case len(c.data) > MaxChunkSize:
		return fmt.Errorf("%w: chunk of %d bytes, limit %d", ErrInvalid, len(c.data), MaxChunkSize)
	}
	return nil
}

// VerifyChunk hashes data and checks it against want, returning an error
// wrapping ErrCorrupt on a mismatch.
func VerifyChunk(want Digest, data []byte) (Chunk, error) {
	c := NewChunk(data)
	if c.digest != want {
		return Chunk{}, fmt.Errorf("%w: chunk %s: bytes hash to %s", ErrCorrupt, want, c.digest)
	}
	return c, nil
}

// Digest returns the chunk's digest.
func (c Chunk) Digest() Digest { return c.digest }

// Data returns the chunk's bytes (not a copy).
func (c Chunk) Data() []byte { return c.data }

// ChunkRef is one entry of a blob index: a chunk's digest and uncompressed
// size.
type ChunkRef struct {
	Digest Digest
	Size   uint32
}

// ChunkReader reads chunks by digest: what a renderer or a chunk server
// needs of the chunk layer.
type ChunkReader interface {
	// HasChunk reports whether the chunk is stored.
	HasChunk(ctx context.Context, d Digest) (bool, error)
	// GetChunk appends the chunk's uncompressed bytes to dst and returns
	// the result, which the caller owns. A missing chunk is ErrNotFound.
	// The bytes are not re-hashed: wrap a store with Verifying where its
	// medium is not trusted.
	GetChunk(ctx context.Context, d Digest, dst []byte) ([]byte, error)
}

// ChunkWriter stores chunks.
type ChunkWriter interface {
	// PutChunk stores c unless it is already there, reporting whether it
	// was added. It is idempotent and safe for concurrent use, also for
	// the same chunk: a chunk is stored and counted once. The store does
	// not keep c's data after PutChunk returns.
	PutChunk(ctx context.Context, c Chunk) (added bool, err error)
}

// ChunkStore keeps chunks by digest.
type ChunkStore interface {
	ChunkReader
	ChunkWriter
}

// BlobIndexReader reads the chunk lists of multi-chunk blobs.
type BlobIndexReader interface {
	// GetBlobIndex returns the chunks of a multi-chunk blob, in order. A
	// blob without an index (one chunk, or absent) is ErrNotFound. The
	// caller owns the slice.
	GetBlobIndex(ctx context.Context, d Digest) ([]ChunkRef, error)
}

// BlobIndexWriter records written blobs.
type BlobIndexWriter interface {
	// PutBlob records that a blob of size bytes was written (counted in
	// Stats.LogicalBytes every time) and, when it has more than one chunk,
	// stores its index. The chunks must already be stored. Idempotent.
	PutBlob(ctx context.Context, d Digest, size uint64, chunks []ChunkRef) error
}

// BlobIndexStore records written blobs and keeps the index of every blob of
// more than one chunk.
type BlobIndexStore interface {
	BlobIndexReader
	BlobIndexWriter
}

// DirectoryReader reads directories by digest.
type DirectoryReader interface {
	// GetDirectory returns a directory, checked against its digest and
	// validated. A missing directory is ErrNotFound.
	GetDirectory(ctx context.Context, d Digest) (*Directory, error)
}

// DirectoryWriter stores directories.
type DirectoryWriter interface {
	// PutDirectory validates and stores d, returning its digest. It does
	// not check that the entries d names are stored: callers put children
	// first. Idempotent and safe for concurrent use.
	PutDirectory(ctx context.Context, d *Directory) (Digest, error)
}

// DirectoryStore keeps directories by digest.
type DirectoryStore interface {
	DirectoryReader
	DirectoryWriter
}

// BlobSource reads blobs: their chunks and chunk lists, what [OpenBlob]
// needs.
type BlobSource interface {
	ChunkReader
	BlobIndexReader
}

// ReadStore is the read side of a store: everything a NAR renderer, a
// file server or a tree check needs, and all that a remote store reached
// over the network offers.
type ReadStore interface {
	ChunkReader
	BlobIndexReader
	DirectoryReader
}

// WriteStore is the write side of a store: what an ingest needs.
type WriteStore interface {
	ChunkWriter
	BlobIndexWriter
	DirectoryWriter
}

// Stats counts what a store holds. LogicalBytes counts every blob written,
// repeats included; the other figures count unique items. Blobs counts blob
// indexes, that is files of more than one chunk (a one-chunk file is its
// chunk). StoredBytes counts stored chunk values (codec byte included) and
// the compressed frames chunks are packed in (see frames.go), dead bytes of
// frames included until compaction rewrites them.
type Stats struct {
	LogicalBytes     uint64 `json:"logicalBytes"`
	UniqueChunkBytes uint64 `json:"uniqueChunkBytes"`
	StoredBytes      uint64 `json:"storedBytes"`
	Chunks           uint64 `json:"chunks"`
	Blobs            uint64 `json:"blobs"`
	Directories      uint64 `json:"directories"`
	// Frames counts the frames chunks are packed in (stores that pack).
	Frames uint64 `json:"frames,omitempty"`
}

// Stater reports a store's counters.
type Stater interface {
	// Stats returns the store's counters.
	Stats(ctx context.Context) (Stats, error)
}

// Syncer makes writes durable.
type Syncer interface {
	// Sync makes everything written so far durable.
	Sync(ctx context.Context) error
}

// Store is a complete castore backend.
type Store interface {
	ChunkStore
	BlobIndexStore
	DirectoryStore
	Stater
	Syncer
	// Close releases the store; it is safe to call twice.
	Close() error
}
