package castore

import "context"

// FrameMeta describes a stored frame.
type FrameMeta struct {
	// Name is the BLAKE3 of the frame's stored bytes.
	Name Digest
	// StoredSize is the size of the frame as stored (compressed).
	StoredSize uint64
	// DecodedSize is the size of the frame decoded: its chunks side by
	// side.
	DecodedSize uint64
	// Filtered: the frame's bytes went through the x86 call filter before
	// compression, which whoever decodes it must undo (pebblestore's
	// DecodeFrame does). A client that cannot is sent no such frame.
	Filtered bool
}

// FrameSource is the optional power of a store that keeps chunks in
// frames (one zstd frame of many chunks, named by the BLAKE3 of its
// stored bytes) to hand out frames as stored, so that a server can send a
// whole frame without decoding it and a client decode it on its side.
// Found with [As]. Its methods are safe for concurrent use.
type FrameSource interface {
	// ChunkPlace reports where chunk d is: in a frame (Framed), or
	// stored on its own (read it with GetChunk). A missing chunk is
	// ErrNotFound.
	ChunkPlace(ctx context.Context, d Digest) (ChunkPlace, error)
	// FrameMeta returns the sizes of frame name. A frame the store does
	// not hold (any longer: compaction and garbage collection retire
	// frames) is ErrNotFound.
	FrameMeta(ctx context.Context, name Digest) (FrameMeta, error)
	// GetFrame appends the stored bytes of frame name to dst and returns
	// the result, after checking that they hash to name (ErrCorrupt,
	// naming the frame, otherwise). A frame the store does not hold is
	// ErrNotFound.
	GetFrame(ctx context.Context, name Digest, dst []byte) ([]byte, error)
}
