package pebblestore

import (
	"context"
	"encoding/binary"
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
	// ahead holds what PrefetchChunkFiles found, at generation aheadGen,
	// until DropChunkFiles.
	ahead    map[castore.Digest]aheadPlace
	aheadGen uint64
	keys     [][]byte // PrefetchChunkFiles' buffers
	looked   []castore.Digest
}

// aheadPlace is what a look-up ahead found of a chunk: its place in a
// frame, or that it is in none (framed false; missing, or stored
// inline), when known (false after a look-up that failed, or before a
// frame retirement: looked up again by the next PrefetchChunkFiles naming
// it). refs counts the PrefetchChunkFiles calls that named it and no
// DropChunkFiles dropped; asking is true while it is being looked up.
type aheadPlace struct {
	r      frameRef
	framed bool
	known  bool
	asking bool
	refs   int
}

// frameRefMaxSize is the most bytes a frame reference takes: the codec
// byte, the frame's digest and two uvarints of at most 32 bits.
const frameRefMaxSize = 1 + castore.DigestSize + 2*binary.MaxVarintLen32

// PrefetchChunkFiles looks up, in one read, the places of the chunks ds
// that the reader is about to ask ChunkFile for, on a database that other
// processes share (PostgreSQL), where each ChunkFile would otherwise be a
// round trip of its own (the store remembers no places there: see
// chunkplace.go). It reads of each chunk's record only as much as a frame
// reference takes. What it finds is kept, beside what earlier calls found,
// until DropChunkFiles drops ds or Close: each place, and each chunk found
// in no frame, which ChunkFile then reports at once as in no file. A place
// so taken is at most as old as the reader's walk from this call to the
// chunk; a frame retired meanwhile by another server fails the read from
// it, and the chunk is then looked up again, as for a place handed on (a
// chunk packed meanwhile is read with GetChunk). After a frame retirement
// in this process, the places found before it are not used, and the
// chunks are looked up again when a call names them. On a database of one
// process it does nothing: places are remembered there. Errors are not
// reported: ChunkFile then looks each chunk not found up alone; ds is
// counted all the same, for DropChunkFiles(ds). ds is not kept.
func (c *chunkFiles) PrefetchChunkFiles(ctx context.Context, ds []castore.Digest) {
	if len(ds) == 0 {
		return
	}
	db, err := c.s.acquire(ctx)
	if err != nil {
		c.count(ds)
		return
	}
	defer c.s.mu.RUnlock()
	if !db.shared() {
		return
	}
	c.count(ds)
	if gen := c.s.places.generation(); gen != c.aheadGen {
		// Places from before a frame retirement: looked up again, the
		// counts of windows not yet dropped kept.
		for d, p := range c.ahead {
			p.known = false
			c.ahead[d] = p
		}
		c.aheadGen = gen
	}
	keys, looked := c.keys[:0], c.looked[:0]
	for _, d := range ds {
		p := c.ahead[d]
		if p.known || p.asking {
			continue
		}
		p.asking = true
		c.ahead[d] = p
		keys = append(keys, pebbleKey(pebbleKindChunk, d))
		looked = append(looked, d)
	}
	c.keys, c.looked = keys, looked
	if len(keys) == 0 {
		return
	}
	// On an error, the places found before it are kept, as good as any.
	err = db.getManySmall(ctx, keys, frameRefMaxSize, func(i int, v []byte, _ int) error {
		if len(v) > 0 && v[0] == CodecFrame {
			if r, err := decodeFrameRef(v); err == nil {
				p := c.ahead[looked[i]]
				p.r, p.framed, p.known = r, true, true
				c.ahead[looked[i]] = p
			}
		}
		return nil
	})
	for _, d := range looked {
		p := c.ahead[d]
		p.asking = false
		if err == nil {
			p.known = true // in no frame, when not found in one
		}
		c.ahead[d] = p
	}
}

// count counts one more PrefetchChunkFiles call naming each of ds.
func (c *chunkFiles) count(ds []castore.Digest) {
	if c.ahead == nil {
		c.ahead = make(map[castore.Digest]aheadPlace, len(ds))
	}
	for _, d := range ds {
		p := c.ahead[d]
		p.refs++
		c.ahead[d] = p
	}
}

// DropChunkFiles forgets what PrefetchChunkFiles(ds) found, each chunk
// once for each time ds names it, but what other calls not yet dropped
// found too. ds is not kept.
func (c *chunkFiles) DropChunkFiles(ds []castore.Digest) {
	if len(c.ahead) == 0 {
		return
	}
	for _, d := range ds {
		p, ok := c.ahead[d]
		if !ok {
			continue
		}
		if p.refs--; p.refs <= 0 {
			delete(c.ahead, d)
		} else {
			c.ahead[d] = p
		}
	}
}

// chunkFile is a decoded file open for one reader.
type chunkFile struct {
	f    *os.File
	size int64 // of the decoded frame, the trailer left out
}

// ChunkFile implements castore.ChunkFiles.
func (c *chunkFiles) ChunkFile(ctx context.Context, d castore.Digest, size uint32) (*os.File, int64, bool) {
	gen := c.s.places.generation()
	var (
		r  frameRef
		ok bool
	)
	if p := c.ahead[d]; p.known && gen == c.aheadGen {
		r, ok = p.r, p.framed
	} else {
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
