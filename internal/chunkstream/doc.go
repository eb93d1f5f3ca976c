// Package chunkstream codes the chunk stream of nixcas.v1.SyncService:
// many chunks as one zstd stream, each chunk framed by its digest and
// length, cut into segments that each end at an encoder flush so the
// receiver decodes every segment as it arrives, and split into zstd
// frames that may each start from a raw-content dictionary (chunks the
// receiver already holds, such as the previous version of the same file).
//
// The decompressed content of a frame is a sequence of chunks:
//
//	digest  32 bytes, BLAKE3 of the chunk
//	length  uvarint, at most castore.MaxChunkSize
//	data    length bytes
//
// A frame ends after a whole chunk, and at a segment boundary. Writer
// builds a stream; Reader takes one apart, bounding what a hostile stream
// can make it allocate: a frame window and a dictionary of at most
// MaxWindow bytes each, and one chunk of at most castore.MaxChunkSize.
// Reader does not verify digests: the caller stores each chunk through a
// path that does (castore.PutEncoded).
package chunkstream
