// Package pebblestore is the default backend of castore: a
// [castore.Store] kept in one embedded Pebble database per data directory,
// with chunk bytes packed into zstd frames beside it.
//
// # Use
//
// [Open] opens (or creates) a store for reading and writing, [OpenReadOnly]
// an existing one for reading only; [Options] tune it ([DefaultOptions],
// [FrameOptions]). A directory is open in one process at a time
// ([ErrLocked]). [OpenPostgres] keeps the same records in a PostgreSQL
// database instead, which several processes (server replicas) share,
// with the frames in a directory they may share too (pg.go); the store's
// logic is the same code on both (kv.go). A [Store] implements castore's interfaces and its optional
// powers (encoded chunks, chunk deletion and scanning, packing, flushing,
// disk use, use records), so it can be wrapped (castore/wrap) and its
// powers found with castore.As. Beyond those it offers [Store.Compact]
// ([CompactOptions]), [Store.GC] ([GCOptions]), [Store.ChunkPlace] and the
// records of the layers above ([Store.SetMeta], [Store.GetMeta],
// [Store.ScanMeta]).
//
// # Layout
//
// One database per data directory. Every key is a one-byte kind followed by
// the kind's own key:
//
//	'c' chunk digest (32)     → stored chunk: codec byte + payload (see castore.ChunkEncoder),
//	                            or a frame reference (codec CodecFrame, see frames.go)
//	'q' sequence (8, BE)      → chunk digest (32) ‖ uvarint size: a chunk stored
//	                            inline, waiting to be packed into a frame
//	'F' frame digest (32)     → the frame's registry record (see frames.go)
//	'b' blob digest (32)      → blob index: n × (chunk digest (32) ‖ size uint32 LE),
//	                            in blob order, n ≥ 2
//	'd' directory digest (32) → canonical snix.castore.v1.Directory bytes
//	'm' name                  → store metadata: "version" (uvarint layout
//	                            version, see pebble.go), "counters" (the
//	                            Stats counters, see below), "compacting"
//	                            (a compaction under way, see
//	                            compact_resume.go)
//	'R' unix ms (8, BE) ‖ kind ‖ digest → empty: a use record of a chunk,
//	                            blob or directory (see gcuse.go)
//	'p' store path digest (20) → PathInfo bytes           (Nix layer, via SetMeta)
//	'n' NAR sha256 (32)        → store path digest (20)   (Nix layer, via SetMeta)
//
// The blob index uses fixed-width entries (36 bytes) rather than varints:
// sizes are at most a few hundred KiB so a varint would save one byte in
// 36, and fixed entries make a damaged index easy to detect by its length.
//
// The counters are one value under 'm' "counters": a vector of uint64
// little-endian, in the order of the counter positions in pebble.go. Every write
// that changes a counter carries a Merge of a delta vector in the same batch
// as the Set it counts, and the merge operator (pebbleCounterMerger) sums
// vectors element-wise, so counters are never out of step with the data,
// even after a crash. A shorter operand adds to the leading counters only;
// a decrement, should one be needed, adds the two's complement.
//
// Every other key kind is free for the layers above, which keep their
// records in the same database through SetMeta, GetMeta and ScanMeta
// (package store defines the Nix layer's: 'p', 'n' and 'u'); SetMeta
// refuses the store's own kinds.
//
// # Frames
//
// A Store first stores a new chunk inline (lz4, see castore.ChunkEncoder)
// and queues it; a packer writes queued chunks, in ingest order, into hot
// frames: objects of about 4 MiB of chunks compressed together as one zstd
// frame, named by their BLAKE3, kept behind an [ObjectStore] ([DirObjects]
// by default, the "frames" subdirectory). [Store.Compact] rewrites chunks
// into cold frames in an order the caller gives (the store layer puts the
// versions of each file side by side) at a high zstd level, tiered: the
// new chunks make a run of level 0, and runs are merged FanOut at a time
// into one of the next level (see compact.go). See frames.go
// for the frame format and the crash rules, gcuse.go and gc.go for what
// garbage collection keeps, diskspace.go for how a full disk is handled.
//
// Reads decode a frame whole: into memory (a small cache of decoded
// frames, FrameOptions.CacheSize) and, on a writable store, onto disk (the
// "decoded" subdirectory, FrameOptions.DecodedCacheSize, 4 GiB by
// default), so that a frame read again is read with one pread rather than
// decompressed again. See decoded.go for that cache's format and checks.
package pebblestore
