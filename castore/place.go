package castore

// ChunkPlace is where a stored chunk lives: in a frame (Framed, with the
// frame's name, the BLAKE3 of its stored bytes, and the chunk's offset and
// length in the decoded frame), or inline in the index. It is what the
// ChunkPlace method of a framing store (pebblestore.Store, FrameSource)
// returns.
type ChunkPlace struct {
	Framed bool
	Frame  Digest
	Offset uint32
	Length uint32
}
