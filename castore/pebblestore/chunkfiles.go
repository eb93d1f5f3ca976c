package pebblestore

import (
	"context"
	"os"

	"github.com/nixcas/nixcas/castore"
)

var _ castore.ChunkFiler = (*Store)(nil)

// ChunkFiles implements castore.ChunkFiler with the store's decoded frames
// on disk (see decoded.go): a chunk whose frame has a decoded file is in
// that file at its offset in the frame. Each file handed out is a file
// description of its own, so that its reader may seek it, opened by path
// and checked to be the very file the cache checked whole (after a
// restart, before any chunk is served from it, as for reads). A store
// without decoded files (read-only, or the cache off) finds none.
func (s *Store) ChunkFiles() castore.ChunkFiles {
	if s.decoded == nil {
		return castore.NoChunkFiles{}
	}
	return &chunkFiles{s: s, files: make(map[castore.Digest]*chunkFile)}
}

// maxChunkFiles bounds the files one ChunkFiles keeps open: beyond, the
// one opened first is closed (a reader still holding it then finds it
// closed, and reads the chunk with GetChunk).
var maxChunkFiles = 256

// chunkFiles is a Store's castore.ChunkFiles.
type chunkFiles struct {
	s     *Store
	files map[castore.Digest]*chunkFile // by frame
	order []castore.Digest              // of files, first opened first
	// ahead holds places looked up by PrefetchChunkFiles, at generation
	// aheadGen, each taken once by ChunkFile.
	ahead    map[castore.Digest]frameRef
	aheadGen uint64
}

// PrefetchChunkFiles looks up, in one read, the places of the chunks ds
// that the reader is about to ask ChunkFile for, beside those of earlier
// calls not yet taken (a walk comes back to a directory's later files
// after a subdirectory), on a database that other processes share (PostgreSQL),
// where each ChunkFile would otherwise be a round trip of its own (the
// store remembers no places there: see chunkplace.go). A place so taken
// is at most as old as the reader's walk from this call to the chunk; a
// frame retired meanwhile by another server fails the read from it, and
// the chunk is then looked up again, as for a place handed on. On a
// database of one process it does nothing: places are remembered there.
// Errors are not reported: ChunkFile then looks each chunk up alone.
func (c *chunkFiles) PrefetchChunkFiles(ctx context.Context, ds []castore.Digest) {
	if len(ds) == 0 {
		return
	}
	db, err := c.s.acquire(ctx)
	if err != nil {
		return
	}
	defer c.s.mu.RUnlock()
	if !db.shared() {
		return
	}
	if c.ahead == nil {
		c.ahead = make(map[castore.Digest]frameRef, len(ds))
	}
	if gen := c.s.places.generation(); gen != c.aheadGen {
		clear(c.ahead) // places from before a frame retirement
		c.aheadGen = gen
	}
	keys := make([][]byte, len(ds))
	for i, d := range ds {
		keys[i] = pebbleKey(pebbleKindChunk, d)
	}
	// On an error, the places found before it are kept, as good as any.
	_ = db.getMany(ctx, keys, func(i int, v []byte) error {
		if len(v) > 0 && v[0] == CodecFrame {
			if r, err := decodeFrameRef(v); err == nil {
				c.ahead[ds[i]] = r
			}
		}
		return nil
	})
}

// chunkFile is a decoded file open for one reader.
type chunkFile struct {
	f    *os.File
	size int64 // of the decoded frame, the trailer left out
}

// ChunkFile implements castore.ChunkFiles.
func (c *chunkFiles) ChunkFile(ctx context.Context, d castore.Digest, size uint32) (*os.File, int64, bool) {
	gen := c.s.places.generation()
	r, ok := c.ahead[d]
	if ok {
		delete(c.ahead, d)
		ok = gen == c.aheadGen
	}
	if !ok {
		r, ok = c.s.framePlace(ctx, d)
	}
	if !ok || r.length != size {
		return nil, 0, false
	}
	cf, seen := c.files[r.frame]
	if !seen {
		if f, n, ok := c.s.decoded.reopen(r.frame, d); ok {
			if len(c.order) == maxChunkFiles {
				c.files[c.order[0]].f.Close()
				delete(c.files, c.order[0])
				c.order = append(c.order[:0], c.order[1:]...)
			}
			cf = &chunkFile{f: f, size: n}
			c.files[r.frame] = cf
			c.order = append(c.order, r.frame)
		}
	}
	if cf == nil || int64(r.offset)+int64(r.length) > cf.size {
		// Read with GetChunk next: spare it a second look-up.
		c.s.places.handOff(d, r, gen)
		return nil, 0, false
	}
	c.s.decoded.hits.Add(1)
	c.s.decoded.sent.Add(1)
	return cf.f, int64(r.offset), true
}

// Close implements castore.ChunkFiles.
func (c *chunkFiles) Close() error {
	for _, cf := range c.files {
		cf.f.Close()
	}
	clear(c.files)
	clear(c.ahead)
	c.order = c.order[:0]
	return nil
}

// reopen returns the decoded file of frame open for reading as a file
// description of its own, with the size of the decoded frame in it; ok is
// false when there is none, or it is damaged (it is then dropped; chunk d
// is named in the log). The file is the one checked (see opened).
func (c *decodedCache) reopen(frame, d castore.Digest) (*os.File, int64, bool) {
	if c == nil {
		return nil, 0, false
	}
	name := frameName(frame)
	e, ok := c.files.Lookup(name)
	if !ok {
		return nil, 0, false
	}
	df, err := c.opened(name, e)
	if err != nil {
		c.damagedFile(e, d, err)
		return nil, 0, false
	}
	checked, err := df.f.Stat()
	if err != nil { // closed meanwhile: not damaged
		return nil, 0, false
	}
	f, err := os.Open(c.files.Path(name))
	if err != nil {
		return nil, 0, false
	}
	info, err := f.Stat()
	if err != nil || !os.SameFile(info, checked) || info.Size() != e.Size() {
		f.Close()
		return nil, 0, false
	}
	return f, e.Size() - int64(decodedTrailer), true
}
