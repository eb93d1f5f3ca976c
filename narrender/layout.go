package narrender

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sync/semaphore"

	"github.com/nixcas/nixcas/castore"
)

// The layout of a NAR follows from its directory tree alone: every string
// of the framing has a known length, and each file's contents are as long
// as the file entry says. So a NAR's size and the offset of each file's
// contents can be computed without reading a single chunk, and a byte
// range of the NAR can be rendered by skipping whole files (and, inside
// the first file of the range, whole chunks) up to its start.

// Node is one node of a NAR, as [Walk] reports it.
type Node struct {
	// Entry is the node; its Name is the last element of the node's path
	// (for the root, the root entry's name as given to Walk).
	Entry castore.Entry
	// Depth is the number of directories the node is in: 0 for the root,
	// 1 for an entry of the root directory.
	Depth int
	// Contents is, for a regular file, the byte offset of its contents in
	// the NAR (the first byte after their length); 0 for other nodes.
	Contents uint64

	parent *dirPath // the directory holding the node; nil for the root
}

// Path returns the node's path inside the archive: "" for the root, "a/b"
// for entry b of directory a. It costs time and memory in proportion to
// the depth; the walk itself never builds paths except for errors.
func (n Node) Path() string { return n.parent.join(n.Entry.Name) }

// Walk calls fn (which may be nil) for every node of the NAR of the tree at
// root, in NAR order: a directory before its entries, entries in ascending
// byte order of their names. It returns the NAR's size. It reads
// directories only, never blob indexes or chunks; each directory is checked
// against its entry's size. An error from fn ends the walk and is returned,
// as is ctx's error once ctx ends (checked every few nodes, so a walk of a
// huge tree stops soon after its caller gives up). The walk does not
// limit what it expands: measure roots that came from elsewhere with
// castore.MeasureTree first.
func Walk(ctx context.Context, s castore.DirectoryReader, root castore.Entry, fn func(Node) error) (uint64, error) {
	l := layout{ctx: ctx, s: s, node: fn}
	return l.run(root)
}

// Size returns the size of the NAR of the tree at root, reading directories
// only.
func Size(ctx context.Context, s castore.DirectoryReader, root castore.Entry) (uint64, error) {
	return Walk(ctx, s, root, nil)
}

// RenderRange writes bytes [off, off+n) of the NAR of the tree at root to
// w. The range must lie within the NAR (see [Size]): a range past its end
// is an error wrapping castore.ErrInvalid once the bytes that exist are
// written. Directories before off are read for their layout, but files
// that end before off are skipped without reading their blob index, and
// within the file holding off, chunks that end before it are not read; the
// walk stops at off+n. Files of at most [SingleChunkMax] bytes are first
// fetched as the one chunk of the file's digest, without a blob index
// look-up (falling back to the index when there is no such chunk), which
// makes RenderRange(0, size) the cheaper way to render trees of many small
// files. Chunks are fetched ahead of the writer and checked as in
// [Render]; after an error w holds a partial range. A w with the
// [FileSender] power is handed the chunks of large files that the store
// keeps in local files as sections of them, to send without reading.
func RenderRange(ctx context.Context, w io.Writer, s Store, root castore.Entry, off, n uint64) error {
	if n == 0 {
		return nil
	}
	end := off + n
	if end < off {
		return fmt.Errorf("%w: NAR range at %d of %d bytes overflows", castore.ErrInvalid, off, n)
	}
	return renderRange(ctx, w, s, root, off, end, true)
}

// renderRange writes bytes [off, end) of the NAR, or from off to the NAR's
// end when exact is false (end is then a bound, not a promise).
func renderRange(ctx context.Context, w io.Writer, s Store, root castore.Entry, off, end uint64, exact bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A fetcher for every chunk that may be in flight, as many as the
	// parts queued ahead (renderAheadParts; the bytes of their buffers
	// are bounded by renderAheadBytes): a chunk in a frame being decoded
	// waits for it, and the next frame's chunks must find fetchers free
	// to start decoding it meanwhile (a 4 MiB frame of small files holds
	// hundreds of chunks). Fetchers start only as chunks queue with none
	// idle, and stay, idle, until the render ends; all renders share
	// renderFetchers.
	f := castore.NewLimitedFetcher(ctx, s, renderAheadParts, renderFetchers)
	defer f.Close()
	parts := make(chan []rangePart, renderAheadParts/partBatch)
	ahead := semaphore.NewWeighted(renderAheadBytes)
	var files castore.ChunkFiles
	fs, sends := w.(FileSender)
	if cf, ok := castore.As[castore.ChunkFiler](s); ok && sends {
		files = cf.ChunkFiles()
		defer files.Close()
	}
	go func() {
		defer close(parts)
		rw := rangeWalker{ctx: ctx, s: s, f: f, files: files, out: parts, ahead: ahead, off: off, end: end}
		l := layout{ctx: ctx, s: s, lit: rw.lit, file: rw.file}
		if rw.prefetch, _ = files.(chunkFilesPrefetcher); rw.prefetch != nil {
			l.enter, l.leave = rw.enter, rw.leave
		}
		size, err := l.run(root)
		// A range that ends, an error or a cancel stops the walk within
		// directories: their windows are dropped all the same.
		for len(rw.dirs) > 0 {
			rw.leave()
		}
		switch {
		case errors.Is(err, errRangeDone):
			err = nil
		case err == nil && exact:
			err = fmt.Errorf("%w: NAR range [%d, %d) past the NAR's end at %d", castore.ErrInvalid, off, end, size)
		}
		if err != nil {
			rw.send(rangePart{err: err})
		} else {
			rw.flush()
		}
	}()

	// Small files make small parts: gather them into large writes.
	guard := stallGuard{w, f}
	bw := bufio.NewWriterSize(guard, int(min(end-off, 256<<10)))
	var (
		err     error
		written uint64
		run     fileRun    // sections waiting to be sent from a file
		win     fileWindow // bytes read ahead from a file, for small sections
	)
	sendRun := func() {
		k, e := run.send(ctx, bw, bw, guard.sender(fs), s)
		written += uint64(k)
		if e != nil {
			err = e
			cancel()
		}
	}
	for batch := range parts {
		for _, p := range batch {
			if err != nil {
				p.release()
				ahead.Release(p.held)
				continue // drain, so the walker ends
			}
			if run.n > 0 && !run.joins(p) {
				if sendRun(); err != nil {
					p.release()
					ahead.Release(p.held)
					continue
				}
			}
			if p.file != nil && !p.read {
				run.add(p)
				continue
			}
			if p.file != nil {
				var k int
				k, err = win.write(ctx, bw, p, s)
				written += uint64(k)
				if err != nil {
					cancel()
				}
				continue
			}
			var k int
			k, err = p.write(ctx, bw, s)
			ahead.Release(p.held)
			written += uint64(k)
			if err != nil {
				cancel()
			}
		}
	}
	if err == nil && run.n > 0 {
		sendRun()
	}
	if err == nil {
		// The walker's last part may have been dropped when ctx ended:
		// never report a render cut short by ctx as complete.
		err = ctx.Err()
	}
	if err == nil && exact && written != end-off {
		err = fmt.Errorf("narrender: NAR range [%d, %d): wrote %d bytes of %d", off, end, written, end-off)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// SingleChunkMax is the size up to which [RenderRange] expects a file to
// be a single chunk: the default chunker never cuts a file below its
// minimum chunk size.
const SingleChunkMax = 16 << 10

// errRangeDone ends the layout walk once a range is complete.
var errRangeDone = errors.New("narrender: range complete")

// rangePart is a piece of a NAR range in order: framing bytes, the bytes
// [lo, hi) of a chunk, or the error that ended the walk. A chunk fetched
// on the guess that it is a whole file has that file in guess.
type rangePart struct {
	lit    []byte
	chunk  *castore.PendingChunk
	lo, hi int
	// file holds bytes [lo, hi) of chunk ref from fileOff, when the
	// chunk is to be sent from its file (see FileSender), or, with read
	// set, read from it (a section too small to be worth a send).
	file    *os.File
	fileOff int64
	read    bool
	ref     castore.ChunkRef
	guess   *guessedFile
	err     error
	held    int64 // of the walker's read-ahead budget
}

type guessedFile struct {
	node Node
}

func (p rangePart) release() {
	if p.chunk != nil {
		p.chunk.Release()
	}
}

func (p rangePart) write(ctx context.Context, w io.Writer, s Store) (int, error) {
	switch {
	case p.err != nil:
		return 0, p.err
	case p.chunk != nil:
		defer p.chunk.Release()
		data, err := p.chunk.Wait()
		if p.guess != nil && errors.Is(err, castore.ErrNotFound) {
			return p.guess.write(ctx, w, s, p.lo, p.hi)
		}
		if err != nil {
			return 0, err
		}
		return w.Write(data[p.lo:p.hi])
	}
	return w.Write(p.lit)
}

// write writes bytes [lo, hi) of a file that is not one chunk after all,
// reading its chunks one by one: the slow path of a wrong guess.
func (g *guessedFile) write(ctx context.Context, w io.Writer, s Store, lo, hi int) (int, error) {
	chunks, err := castore.BlobChunks(ctx, s, g.node.Entry.Digest, g.node.Entry.Size)
	if err != nil {
		return 0, fmt.Errorf("narrender: %q: %w", g.node.Path(), err)
	}
	var (
		pos, n int
		buf    []byte
	)
	for _, c := range chunks {
		clo, chi := clip(uint64(pos), uint64(c.Size), uint64(lo), uint64(hi))
		pos += int(c.Size)
		if clo == chi {
			continue
		}
		if buf, err = readChunk(ctx, s, c, buf); err != nil {
			return n, fmt.Errorf("narrender: %q: %w", g.node.Path(), err)
		}
		k, err := w.Write(buf[clo:chi])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rangeWalker turns the layout of a NAR into the parts of the range
// [off, end), handed to the writer in batches.
type rangeWalker struct {
	ctx      context.Context
	s        Store
	f        *castore.Fetcher
	files    castore.ChunkFiles // nil: every chunk is fetched
	out      chan<- []rangePart
	ahead    *semaphore.Weighted // chunk bytes queued ahead (renderAheadBytes)
	off, end uint64

	prefetch chunkFilesPrefetcher // files' power, or nil
	dirs     []prefetchDir        // the directories open, with prefetch
	batch    []rangePart          // parts not yet handed to the writer
}

// partBatch is the most parts the walker gathers before handing them to
// the writer. While the writer has batches waiting, the walker gathers;
// a part handed over one at a time to a writer that is behind would wake
// the walker once per part (the walker blocks on a full queue, and each
// part taken off it lets the walker run for one more).
const partBatch = 64

// send queues p for the writer: at once when the writer has nothing
// waiting, when p is an error, or when the batch is full; else with the
// parts that follow it.
func (rw *rangeWalker) send(p rangePart) error {
	rw.batch = append(rw.batch, p)
	if len(rw.batch) < partBatch && p.err == nil && len(rw.out) > 0 {
		return nil
	}
	return rw.flush()
}

// flush hands the parts gathered to the writer.
func (rw *rangeWalker) flush() error {
	if len(rw.batch) == 0 {
		return nil
	}
	b := rw.batch
	rw.batch = nil // grows with what is gathered: most batches are of one part
	select {
	case rw.out <- b:
		return nil
	case <-rw.ctx.Done():
		for _, p := range b {
			rw.ahead.Release(p.held)
			p.release()
		}
		return rw.ctx.Err()
	}
}

// fetch takes the bytes of ref's fetch buffer from the read-ahead budget,
// waiting for the writer to give some back if need be (after handing it
// the parts gathered, which hold some), and starts fetching ref.
func (rw *rangeWalker) fetch(ref castore.ChunkRef) (*castore.PendingChunk, int64, error) {
	held := min(castore.FetchBufferSize(ref.Size), renderAheadBytes)
	if !rw.ahead.TryAcquire(held) {
		if err := rw.flush(); err != nil {
			return nil, 0, err
		}
		if err := rw.ahead.Acquire(rw.ctx, held); err != nil {
			return nil, 0, err
		}
	}
	return rw.f.Fetch(ref), held, nil
}

// lit takes framing bytes at NAR offset at.
func (rw *rangeWalker) lit(at uint64, b []byte) error {
	lo, hi := clip(at, uint64(len(b)), rw.off, rw.end)
	if lo < hi {
		if err := rw.send(rangePart{lit: slices.Clone(b[lo:hi])}); err != nil {
			return err
		}
	}
	if at+uint64(len(b)) >= rw.end {
		return errRangeDone
	}
	return nil
}

// chunkFilesPrefetcher is an optional power of a castore.ChunkFiles:
// looking up in one go the chunks ChunkFile is about to be asked for,
// where each look-up would be a round trip (an index in PostgreSQL).
// What PrefetchChunkFiles(ds) finds is kept until DropChunkFiles(ds) or
// Close; neither keeps ds.
type chunkFilesPrefetcher interface {
	PrefetchChunkFiles(ctx context.Context, ds []castore.Digest)
	DropChunkFiles(ds []castore.Digest)
}

// The chunks of a directory's files are looked up a window at a time,
// from the first file the range sends: none of the files the range
// skips, and never a whole huge directory before its first file is sent.
// A directory's first window holds prefetchFirst files, each next one
// twice as many as the one before, up to prefetchMost (a query on
// PostgreSQL reads at most 1,024 keys). A window is held, through the
// walk of any subdirectory, until the directory's next file that may be
// one chunk lies past its end (the next window is then looked up, and it
// dropped) or the walk leaves the directory or stops. Most directories
// fit in the first window, one look-up each
// (BenchmarkPostgresRenderSmallFiles, of directories of 100 files: 0.041
// round trips a file with a first window of 16, 0.031 with 64, 0.021
// with 256); CPU time and the time to the first write
// (BenchmarkPostgresRenderHugeDir) did not tell 16, 64, 256 and 1,024
// apart on a loaded machine.
const (
	prefetchFirst = 256
	prefetchMost  = 1024
)

// prefetchDir is a directory the walk is in, with the window of its
// files' chunks looked up.
type prefetchDir struct {
	entries []castore.Entry
	at      int              // the entry being laid out, or one before it
	upto    int              // the entries before upto were looked up
	window  int              // the files of the next window
	ds      []castore.Digest // the chunks of the window looked up
	next    []castore.Digest // the buffer of the next window's chunks
}

// prefetched reports whether the walker looks up e's chunk ahead: a file
// that may be one chunk, which chunkFile is asked for.
func prefetched(e castore.Entry) bool {
	return e.Kind == castore.KindFile && e.Size > 0 && e.Size <= uint64(castore.DefaultChunkerOptions.MaxSize)
}

// enter starts a directory with entries.
func (rw *rangeWalker) enter(entries []castore.Entry) {
	if len(rw.dirs) < cap(rw.dirs) {
		rw.dirs = rw.dirs[:len(rw.dirs)+1]
	} else {
		rw.dirs = append(rw.dirs, prefetchDir{})
	}
	d := &rw.dirs[len(rw.dirs)-1]
	*d = prefetchDir{entries: entries, window: prefetchFirst, ds: d.ds[:0], next: d.next[:0]}
}

// leave ends the directory entered last, dropping its window.
func (rw *rangeWalker) leave() {
	d := &rw.dirs[len(rw.dirs)-1]
	rw.drop(d)
	d.entries = nil
	rw.dirs = rw.dirs[:len(rw.dirs)-1]
}

// drop drops d's window.
func (rw *rangeWalker) drop(d *prefetchDir) {
	if len(d.ds) > 0 {
		rw.prefetch.DropChunkFiles(d.ds)
	}
	d.ds = d.ds[:0]
}

// lookAhead makes sure that the chunk of e, a file of the directory
// entered last about to be sent, is in its window: when it is past the
// window's end, the next one, from e, is looked up, then the window
// dropped (a chunk in both is kept, not dropped and asked again).
func (rw *rangeWalker) lookAhead(e castore.Entry) {
	if rw.prefetch == nil || len(rw.dirs) == 0 {
		return
	}
	d := &rw.dirs[len(rw.dirs)-1]
	for d.at < len(d.entries) && d.entries[d.at].Name != e.Name {
		d.at++
	}
	if d.at < d.upto || d.at == len(d.entries) {
		return
	}
	next := d.next[:0]
	i := d.at
	for ; i < len(d.entries) && len(next) < d.window; i++ {
		if prefetched(d.entries[i]) {
			next = append(next, d.entries[i].Digest)
		}
	}
	d.upto = i
	d.window = min(2*d.window, prefetchMost)
	rw.prefetch.PrefetchChunkFiles(rw.ctx, next)
	rw.drop(d)
	d.ds, d.next = next, d.ds
}

// chunkFile returns the decoded file holding ref and its offset there,
// when the store has one (castore.ChunkFiles).
func (rw *rangeWalker) chunkFile(ref castore.ChunkRef) (*os.File, int64, bool) {
	if rw.files == nil {
		return nil, 0, false
	}
	return rw.files.ChunkFile(rw.ctx, ref.Digest, ref.Size)
}

// file takes a file's contents at NAR offset at.
func (rw *rangeWalker) file(at uint64, n Node) error {
	e := n.Entry
	if at+e.Size <= rw.off {
		return nil
	}
	if err := rw.contents(at, n); err != nil {
		return err
	}
	if at+e.Size >= rw.end {
		return errRangeDone
	}
	return nil
}

// contents sends the part of file n's contents, at NAR offset at, that
// falls in the range.
func (rw *rangeWalker) contents(at uint64, n Node) error {
	e := n.Entry
	ref := castore.ChunkRef{Digest: e.Digest, Size: uint32(e.Size)}
	if prefetched(e) {
		rw.lookAhead(e)
	}
	if e.Size <= SingleChunkMax {
		lo, hi := clip(at, e.Size, rw.off, rw.end)
		if f, foff, ok := rw.chunkFile(ref); ok {
			// Read, whatever its size, to be read with its neighbours.
			p := fileSection(f, foff, ref, lo, hi)
			p.read = true
			return rw.send(p)
		}
		p, held, err := rw.fetch(ref)
		if err != nil {
			return err
		}
		return rw.send(rangePart{chunk: p, held: held, lo: int(lo), hi: int(hi), guess: &guessedFile{n}})
	}
	// A file that is one chunk is the chunk named by its own digest: when
	// the store has that chunk in a local file, send it from there
	// without reading the blob index. Only files up to the default
	// chunker's largest chunk are looked for (a look-up that misses is a
	// round trip on a shared database); a store cut in larger chunks
	// reads the blob indexes of its larger files, as before.
	// When it is not there, the chunk is not asked for again if the blob
	// index says the file is that one chunk.
	asked := false
	if e.Size <= uint64(castore.DefaultChunkerOptions.MaxSize) {
		if f, foff, ok := rw.chunkFile(ref); ok {
			lo, hi := clip(at, e.Size, rw.off, rw.end)
			return rw.send(fileSection(f, foff, ref, lo, hi))
		}
		asked = true
	}
	chunks, err := castore.BlobChunks(rw.ctx, rw.s, e.Digest, e.Size)
	if err != nil {
		return fmt.Errorf("narrender: %q: %w", n.Path(), err)
	}
	pos := at
	for _, c := range chunks {
		if pos >= rw.end {
			break
		}
		lo, hi := clip(pos, uint64(c.Size), rw.off, rw.end)
		pos += uint64(c.Size)
		if lo == hi {
			continue
		}
		if !asked || c != ref {
			if f, foff, ok := rw.chunkFile(c); ok {
				if err := rw.send(fileSection(f, foff, c, lo, hi)); err != nil {
					return err
				}
				continue
			}
		}
		p, held, err := rw.fetch(c)
		if err != nil {
			return err
		}
		if err := rw.send(rangePart{chunk: p, held: held, lo: int(lo), hi: int(hi)}); err != nil {
			return err
		}
	}
	return nil
}

// fileSection is the part of bytes [lo, hi) of chunk ref, which is at
// offset foff of f: sent from f, or read from it when it is too small to
// be worth a send.
func fileSection(f *os.File, foff int64, ref castore.ChunkRef, lo, hi uint64) rangePart {
	return rangePart{file: f, fileOff: foff + int64(lo), read: hi-lo < sendFileMin, ref: ref, lo: int(lo), hi: int(hi)}
}

// clip returns the part of the n bytes at offset at that falls in
// [off, end), as indexes into those n bytes (lo == hi: none).
func clip(at, n, off, end uint64) (lo, hi uint64) {
	lo, hi = 0, n
	if off > at {
		lo = min(off-at, n)
	}
	if end < at+n {
		hi = max(end, at) - at
	}
	return lo, max(lo, hi)
}

// layout produces the framing of a NAR and the positions of its files'
// contents from the directory tree. Each callback may be nil; lit's bytes
// are valid only during the call. An error from a callback ends the walk.
type layout struct {
	ctx  context.Context
	s    castore.DirectoryReader
	node func(Node) error
	lit  func(at uint64, b []byte) error
	file func(at uint64, n Node) error
	// enter is called with a directory's entries before they are laid
	// out, leave once they are.
	enter func(entries []castore.Entry)
	leave func()

	buf    []byte // framing not yet handed to lit
	pos    uint64 // NAR offset of buf[0]
	visits uint   // nodes walked, to check ctx every few
}

// ctxEvery is how many nodes the layout walks between checks of its
// context.
const ctxEvery = 64

// layoutFlush is how much framing layout gathers before handing it on.
const layoutFlush = 32 << 10

func (l *layout) run(root castore.Entry) (uint64, error) {
	l.buf = appendString(make([]byte, 0, layoutFlush+1024), magic)
	if err := l.walk(Node{Entry: root}); err != nil {
		return 0, err
	}
	if err := l.emit(); err != nil {
		return 0, err
	}
	return l.pos, nil
}

// emit hands the gathered framing to lit.
func (l *layout) emit() error {
	if len(l.buf) == 0 {
		return nil
	}
	if l.lit != nil {
		if err := l.lit(l.pos, l.buf); err != nil {
			return err
		}
	}
	l.pos += uint64(len(l.buf))
	l.buf = l.buf[:0]
	return nil
}

func (l *layout) visit(n Node) error {
	if l.node == nil {
		return nil
	}
	return l.node(n)
}

// layoutFrame is a directory being laid out: its entries in NAR order,
// the next one to open, and the path and depth of its children.
type layoutFrame struct {
	entries []castore.Entry
	next    int
	here    *dirPath
	depth   int
}

// walk lays out the tree under root depth first, with an explicit stack
// of open directories rather than recursion, so that memory grows with
// the depth by one small frame a level whatever the depth.
func (l *layout) walk(root Node) error {
	var stack []layoutFrame
	// closeEntry ends the entry a finished node was in, if any.
	closeEntry := func() error {
		if len(stack) == 0 {
			return nil
		}
		l.buf = appendString(l.buf, ")")
		if len(l.buf) >= layoutFlush {
			return l.emit()
		}
		return nil
	}
	n := root
	for {
		f, err := l.open(n)
		if err != nil {
			return err
		}
		if f != nil {
			stack = append(stack, *f)
		} else if err := closeEntry(); err != nil {
			return err
		}
		for {
			if len(stack) == 0 {
				return nil
			}
			top := &stack[len(stack)-1]
			if top.next < len(top.entries) {
				c := top.entries[top.next]
				top.next++
				l.buf = appendString(appendString(appendString(appendString(l.buf, "entry"), "("), "name"), c.Name)
				l.buf = appendString(l.buf, "node")
				n = Node{Entry: c, Depth: top.depth, parent: top.here}
				break
			}
			stack = stack[:len(stack)-1]
			if l.leave != nil {
				l.leave()
			}
			l.buf = appendString(l.buf, ")")
			if err := closeEntry(); err != nil {
				return err
			}
		}
	}
}

// open lays out node n: all of a file or symlink, its closing ")"
// included; for a directory, its opening, returning the frame of its
// entries still to lay out.
func (l *layout) open(n Node) (*layoutFrame, error) {
	if l.visits++; l.visits%ctxEvery == 0 {
		if err := l.ctx.Err(); err != nil {
			return nil, err
		}
	}
	e := n.Entry
	l.buf = appendString(appendString(l.buf, "("), "type")
	switch e.Kind {
	case castore.KindFile:
		l.buf = appendString(l.buf, "regular")
		if e.Executable {
			l.buf = appendString(appendString(l.buf, "executable"), "")
		}
		l.buf = appendString(l.buf, "contents")
		l.buf = binary.LittleEndian.AppendUint64(l.buf, e.Size)
		contents := l.pos + uint64(len(l.buf))
		n.Contents = contents
		if err := l.visit(n); err != nil {
			return nil, err
		}
		if e.Size > 0 {
			if err := l.emit(); err != nil {
				return nil, err
			}
			if l.file != nil {
				if err := l.file(contents, n); err != nil {
					return nil, err
				}
			}
			l.pos += e.Size
		}
		l.buf = append(l.buf, make([]byte, padding(e.Size))...)
	case castore.KindSymlink:
		if err := l.visit(n); err != nil {
			return nil, err
		}
		l.buf = appendString(appendString(appendString(l.buf, "symlink"), "target"), e.Target)
	case castore.KindDirectory:
		if err := l.visit(n); err != nil {
			return nil, err
		}
		return l.directory(n)
	default:
		return nil, fmt.Errorf("%w: %q: entry of %v", castore.ErrInvalid, n.Path(), e.Kind)
	}
	l.buf = appendString(l.buf, ")")
	return nil, nil
}

// directory opens directory node n: fetches it, checks its size and
// starts its framing.
func (l *layout) directory(n Node) (*layoutFrame, error) {
	e := n.Entry
	dir, err := l.s.GetDirectory(l.ctx, e.Digest)
	if err != nil {
		return nil, fmt.Errorf("narrender: %q: %w", n.Path(), err)
	}
	if got := dir.Size(); got != e.Size {
		return nil, fmt.Errorf("%w: %q: directory %s has size %d, its entry says %d", castore.ErrCorrupt, n.Path(), e.Digest, got, e.Size)
	}
	l.buf = appendString(l.buf, "directory")
	entries := SortedEntries(dir)
	if l.enter != nil {
		l.enter(entries)
	}
	return &layoutFrame{
		entries: entries,
		here:    &dirPath{parent: n.parent, name: e.Name, depth: n.Depth + 1},
		depth:   n.Depth + 1,
	}, nil
}

// SortedEntries returns d's entries in the order a NAR lists them: by
// name, whatever their kind.
func SortedEntries(d *castore.Directory) []castore.Entry {
	entries := d.Entries()
	slices.SortFunc(entries, func(a, b castore.Entry) int { return strings.Compare(a.Name, b.Name) })
	return entries
}
