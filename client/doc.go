// Package client is the nixcas smart client: it pushes trees to a nixcas
// server and pulls them back, moving only the chunks the other side lacks,
// through a local chunk cache (any castore.Store; a pebblestore.Store on
// disk by default).
//
// # Push
//
// A tree is first ingested into the cache (files cut into chunks there, see
// [DumpReader] for a directory and [Nix.DumpReader] for a store path), then
// [Client.PushTree] sends it in the store's write order, asking before each
// step what the server lacks, a batch of digests per round trip:
//
//  1. which blobs are missing; of those, which chunks;
//  2. the missing chunks, on a few parallel streams, each call one zstd
//     stream of chunks (a chunk stream, see internal/chunkstream), grouped
//     by file and, with a base tree (Options.Base, PushTreeFrom), each
//     changed file in frames starting from the base's file at the same
//     path as dictionary; with a server that does not read chunk streams,
//     in messages of about a MiB each compressed with zstd (or, with
//     Options.Compression "none", in their stored lz4 form); the server
//     verifies each chunk against its digest;
//  3. the chunk lists of the missing multi-chunk blobs, which the server
//     checks by hashing the chunks it now holds;
//  4. the missing directories, leaves first, on one stream;
//
// and [Client.PutPathInfo] finishes a store path. [Client.PushClosure]
// does all of it for the closure of Nix store paths, each path after its
// references.
//
// # Pull
//
// [Client.Pull] fetches a tree's directories in one recursive stream,
// the chunk lists of its files in batches, and only the chunks missing from
// the cache, on a few parallel streams. It first asks where they are
// (ChunkPlaces): a frame of the server's (many chunks compressed together)
// of which it needs at least half is fetched whole, as stored (ReadFrames),
// checked against its name, decoded on the client, each chunk taken out
// checked against its digest and cached raw; the other chunks, and all of
// them from servers without frames, come in batches of ReadChunks (chunk
// streams framed as the client asks, with dictionaries from a base tree in
// the cache, when the server knows them; chunks otherwise), each verified
// before it is cached. Files are written from the cache while chunks
// arrive, each file waiting for its own, checked against its BLAKE3 digest,
// the whole tree in a temporary directory renamed to the destination at
// the end (a file pulled alone goes to a temporary name, renamed once
// checked). A pull of many small files costs a round trip per few thousand
// files, not one per file.
//
// A Client is safe for concurrent use; the cache must be too.
package client
