package pebblestore

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

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
// goroutine (a read never waits for a write; when the writer falls behind
// by decodedQueueBytes, frames are not kept), to a temporary name renamed
// into place, never synced. Open indexes what a previous process left (so
// the cache survives restarts) and removes temporary files a crash left.
//
// A file is the decoded bytes followed by a trailer: the XXH64 (8 bytes,
// little-endian) of those bytes and the frame's name (so that another
// frame's file, whole, is refused too), then decodedMagic. The check is
// against accidental damage (a crash, a full disk, a copy cut short), as
// Pebble's block checksums are; the frame itself, not its decoded file,
// is what is checked against its name. XXH64 rather than BLAKE3: the hash
// of every decoded frame written was a sixth of a first render's CPU.
// Integrity: a file this process did not write is read whole and checked
// against that hash when it is first opened (after a restart, or after it
// was closed to stay within maxOpenDecoded), before any chunk is served
// from it; a damaged, cut short or emptied file is dropped and the read
// falls back to the frame itself, which is checked against its name and
// its zstd checksum as always. Once checked, a file stays open and each
// read is one pread, bounds-checked (a file cut short later fails the read
// and is dropped), but not hashed again: like Pebble's own files, a
// decoded file changed in place behind a running process is trusted.
// Frames deleted by compaction or collection drop their decoded files
// (forget), and a write still in flight for such a frame is not kept.
//
// Only reads through GetChunk fill the cache: compaction and collection
// read the frames they are about to delete, and a store opened read-only
// neither reads nor writes decoded files (it changes nothing on disk).

// DefaultDecodedCacheSize bounds the decoded frames a store keeps on disk
// when FrameOptions.DecodedCacheSize is 0.
const DefaultDecodedCacheSize = 4 << 30

// decodedQueueBytes bounds the decoded bytes waiting for the writer (and
// decodedQueue the frames); beyond, frames are not kept (until they are
// decoded again).
const (
	decodedQueueBytes = 64 << 20
	decodedQueue      = 1024
)

// maxOpenDecoded bounds the decoded files kept open, checked, for reads;
// the least recently used is closed first.
const maxOpenDecoded = 512

// decodedMagic ends each decoded file, after its hash: a file without it
// was written by an earlier version (which ended files with a BLAKE3),
// and is dropped as stale rather than damaged.
const decodedMagic = "nixcasD2"

// decodedTrailer is the length of the trailer that ends each file.
const decodedTrailer = 8 + len(decodedMagic)

// decodedSum is the trailer that ends the decoded file of frame name.
func decodedSum(name castore.Digest, data []byte) []byte {
	h := xxhash.New()
	h.Write(data)
	h.Write(name[:])
	return append(binary.LittleEndian.AppendUint64(make([]byte, 0, decodedTrailer), h.Sum64()), decodedMagic...)
}

// isBLAKE3DecodedFile reports whether file b is a whole decoded file of
// frame as earlier versions wrote them: the decoded bytes, then the
// BLAKE3 of them and the frame's name.
func isBLAKE3DecodedFile(frame castore.Digest, b []byte) bool {
	if len(b) < castore.DigestSize {
		return false
	}
	data := b[:len(b)-castore.DigestSize]
	h := castore.NewHasher()
	h.Write(data)
	h.Write(frame[:])
	return bytes.Equal(h.Sum(nil), b[len(data):])
}

// errDecodedFormat: a decoded file written by an earlier version.
var errDecodedFormat = errors.New("castore: decoded frame file of an earlier format")

// DecodedCacheStats describe a store's cache of decoded frames on disk.
type DecodedCacheStats struct {
	Dir      string `json:"dir"`
	MaxBytes int64  `json:"maxBytes"`
	Bytes    int64  `json:"bytes"`
	Files    int    `json:"files"`
	// Hits counts chunk reads served from a decoded file, Sent those
	// among them handed out as a section of the file (ChunkFiles), to be
	// sent from it or read by the renderer.
	Hits uint64 `json:"hits"`
	Sent uint64 `json:"sent"`
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

	hits, sent, misses, writes, skipped, evictions, damaged atomic.Uint64

	mu      sync.Mutex // guards the fields below; taken before files' lock
	pending map[castore.Digest]*decodedWrite
	queued  int64 // bytes of the frames in queue
	queue   chan *decodedWrite
	closed  bool
	writer  sync.WaitGroup

	openMu sync.Mutex // guards open and openLRU; taken after files' lock
	open   map[string]*decodedFile
	// openLRU lists the open files, most recently used at the front.
	openLRU list.List
}

// decodedFile is a decoded file open and checked.
type decodedFile struct {
	name  string
	entry *lrudir.Entry // the file as indexed when opened
	f     *os.File
	elem  *list.Element
}

// decodedWrite is a decoded frame waiting to be written.
type decodedWrite struct {
	name    castore.Digest
	data    []byte // shared with the frame cache: never modified
	release func() // called once data is written or not to be
	dropped bool   // its frame was deleted meanwhile: not to be kept
}

// openDecodedCache indexes the decoded frames in dir and starts the
// writer.
func openDecodedCache(dir string, max int64, admit func(int) error) (*decodedCache, error) {
	c := &decodedCache{
		admit:   admit,
		pending: make(map[castore.Digest]*decodedWrite),
		queue:   make(chan *decodedWrite, decodedQueue),
		open:    make(map[string]*decodedFile),
	}
	files, err := lrudir.Open(dir, max, isFrameName, func(name string) {
		c.evictions.Add(1)
		c.closeFile(name)
	})
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
	c.openMu.Lock()
	defer c.openMu.Unlock()
	for _, df := range c.open {
		df.f.Close()
	}
	clear(c.open)
	c.openLRU.Init()
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
	df, err := c.opened(name, e)
	if err != nil {
		c.damagedFile(e, d, err)
		return dst, false
	}
	start := len(dst)
	if end := int64(r.offset) + int64(r.length); end > e.Size()-int64(decodedTrailer) {
		c.damagedFile(e, d, fmt.Errorf("chunk at %d+%d beyond its %d bytes", r.offset, r.length, e.Size()-int64(decodedTrailer)))
		return dst, false
	}
	dst = castore.Grow(dst, int(r.length))
	n, err := df.f.ReadAt(dst[start:], int64(r.offset))
	if n != int(r.length) {
		if !errors.Is(err, os.ErrClosed) { // closed meanwhile: not damaged
			c.damagedFile(e, d, fmt.Errorf("read %d bytes at %d, want %d: %v", n, r.offset, r.length, err))
		}
		return dst[:start], false
	}
	c.hits.Add(1)
	return dst, true
}

// damagedFile logs, counts and drops the decoded file e, found damaged
// while reading chunk d.
func (c *decodedCache) damagedFile(e *lrudir.Entry, d castore.Digest, err error) {
	if errors.Is(err, errDecodedFormat) {
		slog.Debug("castore: decoded frame cache: dropping a file of an earlier format", "file", c.files.Path(e.Name()))
		c.drop(e)
		return
	}
	slog.Warn("castore: decoded frame cache: dropping a damaged file", "file", c.files.Path(e.Name()), "chunk", d.String(), "err", err)
	c.damaged.Add(1)
	c.drop(e)
}

// opened returns the decoded file of entry e open, opening and checking it
// if need be.
func (c *decodedCache) opened(name string, e *lrudir.Entry) (*decodedFile, error) {
	c.openMu.Lock()
	df := c.open[name]
	if df != nil && df.entry == e {
		c.openLRU.MoveToFront(df.elem)
		c.openMu.Unlock()
		return df, nil
	}
	c.openMu.Unlock()
	f, err := os.Open(c.files.Path(name))
	if err != nil {
		return nil, err
	}
	frame, _ := parseFrameName(name)
	if err := checkDecodedFile(f, frame, e.Size()); err != nil {
		f.Close()
		return nil, err
	}
	return c.adopt(name, e, f), nil
}

// checkDecodedFile reads the decoded file of frame whole and checks its
// bytes against the hash that ends it, and its size against the size it
// was indexed with.
func checkDecodedFile(f *os.File, frame castore.Digest, size int64) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Size() != size || size < int64(decodedTrailer) {
		return fmt.Errorf("%w: %d bytes, indexed with %d", castore.ErrCorrupt, info.Size(), size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return err
	}
	data, sum := b[:size-int64(decodedTrailer)], b[size-int64(decodedTrailer):]
	if !bytes.HasSuffix(sum, []byte(decodedMagic)) {
		if isBLAKE3DecodedFile(frame, b) {
			return errDecodedFormat
		}
		return fmt.Errorf("%w: its %d bytes do not end with %q", castore.ErrCorrupt, len(b), decodedMagic)
	}
	if got := decodedSum(frame, data); !bytes.Equal(got, sum) {
		return fmt.Errorf("%w: its %d bytes and frame name hash to %x, not to the %x it ends with", castore.ErrCorrupt, len(data), got, sum)
	}
	return nil
}

// adopt keeps f, open and checked, as the file of entry e, and returns
// it; another reader may have adopted one meanwhile (f is then closed).
func (c *decodedCache) adopt(name string, e *lrudir.Entry, f *os.File) *decodedFile {
	c.openMu.Lock()
	defer c.openMu.Unlock()
	if old := c.open[name]; old != nil {
		if old.entry == e {
			f.Close()
			return old
		}
		c.closeLocked(old)
	}
	df := &decodedFile{name: name, entry: e, f: f}
	df.elem = c.openLRU.PushFront(df)
	c.open[name] = df
	for c.openLRU.Len() > maxOpenDecoded {
		c.closeLocked(c.openLRU.Back().Value.(*decodedFile))
	}
	return df
}

// closeFile closes the open file of name, if any.
func (c *decodedCache) closeFile(name string) {
	c.openMu.Lock()
	defer c.openMu.Unlock()
	if df := c.open[name]; df != nil {
		c.closeLocked(df)
	}
}

func (c *decodedCache) closeLocked(df *decodedFile) {
	c.openLRU.Remove(df.elem)
	delete(c.open, df.name)
	df.f.Close()
}

// drop removes a damaged file (unless a newer one replaced it).
func (c *decodedCache) drop(e *lrudir.Entry) {
	c.files.Drop(e)
	c.openMu.Lock()
	defer c.openMu.Unlock()
	if df := c.open[e.Name()]; df != nil && df.entry == e {
		c.closeLocked(df)
	}
}

// keep queues the decoded frame name to be written, unless it is there,
// queued already, or the writer is behind. data is not modified; release
// is called once it is not needed any more (at once if not queued).
func (c *decodedCache) keep(name castore.Digest, data []byte, release func()) {
	if c == nil {
		release()
		return
	}
	if !c.queueWrite(name, data, release) {
		release()
	}
}

// queueWrite queues data to be written as frame name's decoded file, and
// reports whether it did.
func (c *decodedCache) queueWrite(name castore.Digest, data []byte, release func()) bool {
	c.misses.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.pending[name] != nil || c.files.Has(frameName(name)) || int64(len(data)) > c.files.Max() {
		return false
	}
	if c.queued+int64(len(data)) > decodedQueueBytes {
		c.skipped.Add(1)
		return false
	}
	w := &decodedWrite{name: name, data: data, release: release}
	select {
	case c.queue <- w:
		c.pending[name] = w
		c.queued += int64(len(data))
		return true
	default:
		c.skipped.Add(1)
		return false
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
	c.closeFile(frameName(name))
}

// write writes the queued frames until close.
func (c *decodedCache) write() {
	defer c.writer.Done()
	for w := range c.queue {
		tmp := c.writeTemp(w)
		name := frameName(w.name)
		c.mu.Lock()
		switch {
		case tmp == nil:
		case w.dropped:
			tmp.Close()
			os.Remove(tmp.Name())
		case c.files.Keep(name, tmp.Name(), int64(len(w.data))+int64(decodedTrailer)):
			c.writes.Add(1)
			// Written from bytes decoded and checked: open for reads
			// without reading it back.
			if e, ok := c.files.Lookup(name); ok {
				c.adopt(name, e, tmp)
				tmp = nil
			}
		}
		delete(c.pending, w.name)
		c.queued -= int64(len(w.data))
		c.mu.Unlock()
		w.release()
		if tmp != nil {
			tmp.Close()
		}
	}
}

// writeTemp writes w's bytes and their hash to a temporary file and
// returns it, open, or nil when it did not (no room, or an error, logged).
func (c *decodedCache) writeTemp(w *decodedWrite) *os.File {
	if c.admit != nil {
		if err := c.admit(len(w.data) + decodedTrailer); err != nil {
			c.skipped.Add(1)
			return nil
		}
	}
	name := frameName(w.name)
	f, err := c.files.CreateTemp(name)
	if err != nil {
		slog.Warn("castore: decoded frame cache: cannot keep a frame", "frame", name, "err", err)
		return nil
	}
	_, err = f.Write(w.data)
	if err == nil {
		_, err = f.Write(decodedSum(w.name, w.data))
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		slog.Warn("castore: decoded frame cache: cannot keep a frame", "frame", name, "err", err)
		return nil
	}
	return f
}

// isFrameName reports whether name is a frame's name (hex BLAKE3).
func isFrameName(name string) bool {
	_, ok := parseFrameName(name)
	return ok
}

// decodedFilesIn counts the decoded frames in dir and their bytes,
// changing nothing.
func decodedFilesIn(dir string) DecodedCacheStats {
	st := DecodedCacheStats{Dir: dir}
	st.Files, st.Bytes, _ = lrudir.Count(dir, isFrameName)
	return st
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
		Sent:      c.sent.Load(),
		Misses:    c.misses.Load(),
		Writes:    c.writes.Load(),
		Skipped:   c.skipped.Load(),
		Evictions: c.evictions.Load(),
		Damaged:   c.damaged.Load(),
	}
}
