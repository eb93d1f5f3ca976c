package pebblestore

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/lrudir"
)

// Decoded frames on disk
//
// Decoding a frame costs a zstd pass over all of it (about 650 MB/s a
// core), however small the chunk a reader wants. So that a store read
// again and again is not decoded again and again, a Store keeps the
// decoded bytes of the frames it decoded for reads as files under
// DATA/decoded/NA/NAME (NAME the frame's name), bounded in bytes, least
// recently used out first (lrudir). A later read of a chunk in such a
// frame is one pread of exactly the chunk's bytes, served from the page
// cache when the file is warm, with no zstd at all.
//
// The files are derived data: written off the read path by one writer
// goroutine (a read never waits for a write; when the writer falls behind,
// frames are not kept), to a temporary name renamed into place, never
// synced. Open indexes what a previous process left (so the cache survives
// restarts) and removes temporary files a crash left.
//
// Integrity: every chunk read from a decoded file is hashed and compared
// with the chunk's digest, so a file damaged or cut short on disk, at any
// time, never yields wrong bytes: the file is dropped and the read falls
// back to the frame itself, which is checked against its name and its zstd
// checksum as always. Frames deleted by compaction or collection drop
// their decoded files (forget), and a write still in flight for such a
// frame is not kept.
//
// Only reads through GetChunk fill the cache: compaction and collection
// read the frames they are about to delete, and a store opened read-only
// neither reads nor writes decoded files (it changes nothing on disk).

// DefaultDecodedCacheSize bounds the decoded frames a store keeps on disk
// when FrameOptions.DecodedCacheSize is 0.
const DefaultDecodedCacheSize = 4 << 30

// decodedQueue is how many decoded frames may wait for the writer; more
// are not kept.
const decodedQueue = 16

// DecodedCacheStats describe a store's cache of decoded frames on disk.
type DecodedCacheStats struct {
	Dir      string `json:"dir"`
	MaxBytes int64  `json:"maxBytes"`
	Bytes    int64  `json:"bytes"`
	Files    int    `json:"files"`
	// Hits counts chunk reads served from a decoded file.
	Hits uint64 `json:"hits"`
	// Misses counts frames decoded for a read for want of a decoded file.
	Misses uint64 `json:"misses"`
	// Writes counts decoded files written; Skipped the decoded frames not
	// written because the writer was behind or the disk nearly full.
	Writes  uint64 `json:"writes"`
	Skipped uint64 `json:"skipped"`
	// Evictions counts files removed to stay within MaxBytes; Damaged the
	// files dropped because a read from them failed or did not match.
	Evictions uint64 `json:"evictions"`
	Damaged   uint64 `json:"damaged"`
}

// decodedCache keeps decoded frames as files (see above). A nil
// *decodedCache is a cache that is off: it finds nothing and keeps nothing.
type decodedCache struct {
	files *lrudir.Dir
	// admit asks whether the disk has room for n more bytes (nil: always).
	admit func(n int) error

	hits, misses, writes, skipped, evictions, damaged atomic.Uint64

	mu      sync.Mutex // guards the fields below; taken before files' lock
	pending map[castore.Digest]*decodedWrite
	queue   chan *decodedWrite
	closed  bool
	writer  sync.WaitGroup
}

// decodedWrite is a decoded frame waiting to be written.
type decodedWrite struct {
	name    castore.Digest
	data    []byte // shared with the frame cache: never modified
	dropped bool   // its frame was deleted meanwhile: not to be kept
}

// openDecodedCache indexes the decoded frames in dir and starts the
// writer.
func openDecodedCache(dir string, max int64, admit func(int) error) (*decodedCache, error) {
	c := &decodedCache{
		admit:   admit,
		pending: make(map[castore.Digest]*decodedWrite),
		queue:   make(chan *decodedWrite, decodedQueue),
	}
	files, err := lrudir.Open(dir, max, func(name string) bool {
		_, ok := parseFrameName(name)
		return ok
	}, func() { c.evictions.Add(1) })
	if err != nil {
		return nil, fmt.Errorf("castore: decoded frame cache: %w", err)
	}
	c.files = files
	c.writer.Add(1)
	go c.write()
	return c, nil
}

// close stops the writer once the frames queued are written. Safe twice.
func (c *decodedCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.queue)
	}
	c.mu.Unlock()
	c.writer.Wait()
}

// read appends the chunk d at r from the decoded file of r's frame to dst.
// ok is false when there is no such file, or it is damaged (it is then
// dropped): the caller decodes the frame.
func (c *decodedCache) read(r frameRef, d castore.Digest, dst []byte) (out []byte, ok bool) {
	if c == nil {
		return dst, false
	}
	name := frameName(r.frame)
	e, ok := c.files.Lookup(name)
	if !ok {
		return dst, false
	}
	start := len(dst)
	dst = castore.Grow(dst, int(r.length))
	bad := func(why string, err error) ([]byte, bool) {
		slog.Warn("castore: decoded frame cache: dropping a damaged file", "file", c.files.Path(name), "chunk", d.String(), "why", why, "err", err)
		c.damaged.Add(1)
		c.files.Drop(e)
		return dst[:start], false
	}
	if end := int64(r.offset) + int64(r.length); end > e.Size() {
		return bad(fmt.Sprintf("chunk at %d+%d beyond its %d bytes", r.offset, r.length, e.Size()), nil)
	}
	f, err := os.Open(c.files.Path(name))
	if err != nil {
		return bad("open", err)
	}
	n, err := f.ReadAt(dst[start:], int64(r.offset))
	f.Close()
	if n != int(r.length) {
		return bad(fmt.Sprintf("read %d bytes at %d, want %d", n, r.offset, r.length), err)
	}
	if got := castore.Hash(dst[start:]); got != d {
		return bad("chunk bytes hash to "+got.String(), nil)
	}
	c.hits.Add(1)
	return dst, true
}

// keep queues the decoded frame name to be written, unless it is there,
// queued already, or the writer is behind. data is not modified.
func (c *decodedCache) keep(name castore.Digest, data []byte) {
	if c == nil {
		return
	}
	c.misses.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.pending[name] != nil || c.files.Has(frameName(name)) || int64(len(data)) > c.files.Max() {
		return
	}
	w := &decodedWrite{name: name, data: data}
	select {
	case c.queue <- w:
		c.pending[name] = w
	default:
		c.skipped.Add(1)
	}
}

// forget drops the decoded file of a deleted frame, and a write of it in
// flight.
func (c *decodedCache) forget(name castore.Digest) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.pending[name]; w != nil {
		w.dropped = true
	}
	c.files.Remove(frameName(name))
}

// write writes the queued frames until close.
func (c *decodedCache) write() {
	defer c.writer.Done()
	for w := range c.queue {
		tmp := c.writeTemp(w)
		c.mu.Lock()
		switch {
		case tmp == "":
		case w.dropped:
			os.Remove(tmp)
		case c.files.Keep(frameName(w.name), tmp, int64(len(w.data))):
			c.writes.Add(1)
		}
		delete(c.pending, w.name)
		c.mu.Unlock()
	}
}

// writeTemp writes w's bytes to a temporary file and returns its path, or
// "" when it did not (no room, or an error, logged).
func (c *decodedCache) writeTemp(w *decodedWrite) string {
	if c.admit != nil {
		if err := c.admit(len(w.data)); err != nil {
			c.skipped.Add(1)
			return ""
		}
	}
	name := frameName(w.name)
	f, err := c.files.CreateTemp(name)
	if err != nil {
		slog.Warn("castore: decoded frame cache: cannot keep a frame", "frame", name, "err", err)
		return ""
	}
	_, err = f.Write(w.data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		slog.Warn("castore: decoded frame cache: cannot keep a frame", "frame", name, "err", err)
		return ""
	}
	return f.Name()
}

// stats returns what the cache holds and has done.
func (c *decodedCache) stats() DecodedCacheStats {
	if c == nil {
		return DecodedCacheStats{}
	}
	return DecodedCacheStats{
		Dir:       c.files.Dir(),
		MaxBytes:  c.files.Max(),
		Bytes:     c.files.Used(),
		Files:     c.files.Len(),
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Writes:    c.writes.Load(),
		Skipped:   c.skipped.Load(),
		Evictions: c.evictions.Load(),
		Damaged:   c.damaged.Load(),
	}
}
