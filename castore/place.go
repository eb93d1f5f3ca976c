package castore

// ChunkPlace is where a stored chunk lives: in a frame (Framed, with the
// frame's name and the chunk's offset in it), or inline in the index. It is
// what the ChunkPlace method of a framing store (pebblestore.Store)
// returns.
type ChunkPlace struct {
	Framed bool
	Frame  Digest
	Offset uint32
}
