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
// [MemoryStore] keeps everything in maps (tests, caches); the store of
// castore/pebblestore keeps everything in one embedded Pebble database and
// is the default. Both pass the conformance suite in castore/castoretest.
// This package imports no backend: the values a backend needs to check
// and decode what it reads ([Chunk.Check], [CheckBlobIndex],
// [DecodeStoredDirectory], [VerifyEncoded], [DecodedChunkSize]) and the
// records of its optional powers ([MetaRecord], [UseKind], [ChunkPlace])
// are declared here.
//
// # Optional powers and wrappers
//
// What only some stores can do is an interface of its own, an optional
// power: [EncodedChunkStore] (chunks in their stored form), [ChunkDeleter],
// [ChunkScanner], [Packer], [Flusher], [DiskUser], [UseRecorder]. Stores
// are composed of wrappers ([Verifying] here; read-only, counting,
// retrying and read-through in castore/wrap), each with an Unwrap method;
// [As] finds a power in a store or in whatever it wraps, so a power
// survives any number of wrappers. Find powers with As, never by asserting
// on the outer value.
//
// # Frames
//
// The Pebble store (castore/pebblestore) packs chunks, in ingest order,
// into hot frames of about 4 MiB compressed together as one zstd frame,
// and compaction rewrites them into cold frames; a chunk in a frame is
// still read and written through the interfaces above. See that package's
// doc for its layout.
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
