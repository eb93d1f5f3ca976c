package castore

import (
	"context"
	"os"
)

// ChunkFiler is the optional power of a store that keeps chunks' bytes,
// uncompressed and checked, in local files (pebblestore's decoded
// frames): a reader can then have the kernel send a chunk straight from
// the file (sendfile) rather than copy it through memory. Find it with
// [As]; a wrapper that must see every chunk read (Verifying) hides it.
type ChunkFiler interface {
	// ChunkFiles returns a finder of chunk files for one reader; Close it
	// when done.
	ChunkFiles() ChunkFiles
}

// ChunkFiles finds chunks in local files, for one reader: its methods are
// called from one goroutine at a time (the files it returns may be used
// on another).
type ChunkFiles interface {
	// ChunkFile returns a file that holds the size bytes of chunk d from
	// offset off, checked as the store checks its files; ok is false when
	// no such file is at hand (read the chunk with GetChunk then). The
	// file is open until Close, owned by the ChunkFiles: the caller may
	// seek and read it but not close it, and the same file may come back
	// for other chunks. A file may end early if it is damaged after it
	// was checked: a read that comes up short is finished with GetChunk,
	// which notices the damage.
	ChunkFile(ctx context.Context, d Digest, size uint32) (f *os.File, off int64, ok bool)
	// Close closes the files returned. Safe to call twice.
	Close() error
}

// NoChunkFiles finds no chunk in any file.
type NoChunkFiles struct{}

// ChunkFile implements ChunkFiles: never ok.
func (NoChunkFiles) ChunkFile(context.Context, Digest, uint32) (*os.File, int64, bool) {
	return nil, 0, false
}

// Close implements ChunkFiles.
func (NoChunkFiles) Close() error { return nil }
