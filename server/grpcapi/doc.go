// Package grpcapi serves the castore and the PathInfo index over gRPC: the
// snix protocol (snix.castore.v1 BlobService and DirectoryService,
// snix.store.v1 PathInfoService, also answered under the older tvix.*
// service names, whose messages have the same bytes) and nixcas.v1
// SyncService, chunk-level sync for smart clients.
//
// # Writes
//
// Everything a client sends is checked before it becomes visible, in the
// store's write order: chunks are verified against their digests
// (castore.VerifyChunk, through PutEncodedChunk or the chunking writer);
// a blob's chunk list is accepted only when its chunks are stored and hash,
// concatenated, to the blob's digest; a directory stream is validated
// whole (names, references to directories sent before or already stored,
// sizes, every directory connected to the last one) before any of it is
// written, children first; a PathInfo is recorded only when its whole tree
// is stored and its NAR, rendered from the tree, has the claimed size and
// SHA-256.
//
// # Errors
//
// Handlers return the castore and store errors; one interceptor maps them
// to status codes: ErrNotFound to NOT_FOUND, ErrInvalid to
// INVALID_ARGUMENT, castore.ErrCorrupt (a digest mismatch) to DATA_LOSS,
// store.ErrIncomplete (a reference to something missing) to
// FAILED_PRECONDITION, castore.ErrNoSpace (the server's disk is nearly
// full) to RESOURCE_EXHAUSTED.
//
// # Authentication
//
// With a push token configured, every write (the Put methods, PutChunks,
// PutBlobs) needs the metadata "authorization: Bearer <token>"; with a read
// token, so does every other call, which the push token also opens. With a
// read token and no push token, or with Options.RefuseAnonymousWrites and
// no push token, writes are refused. The rules are server/auth's, shared
// with the HTTP handler. A call without the header fails with
// UNAUTHENTICATED ("token required"), one with a wrong token ("wrong
// token") or a refused write with PERMISSION_DENIED. Tokens are compared
// in constant time.
package grpcapi
