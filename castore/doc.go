// Package castore is the content-addressed store under nixcas: it keeps
// directories, files and symlinks, knowing nothing of Nix.
//
// # Model
//
// Everything is addressed by a [Digest], the BLAKE3-256 of its bytes:
//
//   - A chunk is a piece of a file, cut by content-defined chunking
//     ([Chunker], FastCDC). Its digest is the BLAKE3 of its uncompressed
//     bytes. Chunks are stored once.
//   - A blob is the content of one file. Its digest is the BLAKE3 of the
//     whole content, whatever the chunking. A blob of one chunk is that
//     chunk; a blob of several chunks has a blob index: the ordered list of
//     its chunks ([ChunkRef]).
//   - A [Directory] lists directories, files and symlinks by name. Its digest
//     is the BLAKE3 of its canonical protobuf encoding (the snix castore
//     wire format), so digests agree with snix/tvix.
//   - An [Entry] is a named node: what a directory lists, or, with an empty
//     name, the root of a tree.
//
// # Interfaces
//
// Backends implement small interfaces, one or two methods each
// ([ChunkReader], [ChunkWriter], [BlobIndexReader], [BlobIndexWriter],
// [DirectoryReader], [DirectoryWriter], [Stater], [Syncer]), composed into
// [ReadStore] (what a renderer or a remote store offers), [WriteStore]
// and [Store]. Consumers ask for the narrowest one they need.
// [MemoryStore] keeps everything in maps (tests, caches); [PebbleStore]
// keeps everything in one embedded Pebble database and is the default.
// Both pass the conformance suite in castore/castoretest.
//
// # Optional powers and wrappers
//
// What only some stores can do is an interface of its own, an optional
// power: [EncodedChunkStore] (chunks in their stored form), [ChunkDeleter],
// [ChunkScanner], [Packer], [Flusher], [DiskUser]. Stores are composed of
// wrappers ([Verifying] here; read-only, counting, retrying and
// read-through in castore/wrap), each with an Unwrap method; [As] finds a
// power in a store or in whatever it wraps, so a power survives any
// number of wrappers. Find powers with As, never by asserting on the
// outer value.
//
// # Frames
//
// A [PebbleStore] first stores a new chunk inline (lz4, see
// [ChunkEncoder]) and queues it; a packer writes queued chunks, in ingest
// order, into hot frames: objects of about 1 MiB of chunks compressed
// together as one zstd frame, named by their BLAKE3, kept behind an
// [ObjectStore] ([DirObjects] by default). [PebbleStore.Compact] rewrites
// chunks into cold frames in an order the caller gives (the store layer
// puts the versions of each file side by side) at a high zstd level. See
// frames.go for the layout and the crash rules.
//
// # Verification
//
// A [Chunk] can only be made by hashing its bytes ([NewChunk]) or by
// checking them against an expected digest ([VerifyChunk]), so every chunk a
// store receives has been hashed exactly once on the way in. Blobs are
// verified as they are written ([BlobWriter]) and read ([BlobReader]).
//
// # Errors
//
// Errors wrap [ErrNotFound], [ErrCorrupt] or [ErrInvalid]; test them with
// errors.Is.
package castore
