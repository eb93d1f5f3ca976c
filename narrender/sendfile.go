package narrender

import (
	"context"
	"io"
	"os"

	"github.com/nixcas/nixcas/castore"
)

// FileSender is an optional power of the writer a NAR range is rendered
// to: SendFile writes the next n bytes of f, from f's current offset, and
// returns how many it wrote; fewer than n with a nil error when f ended
// first. An http.ResponseWriter on a TCP connection does it with sendfile
// (through io.ReaderFrom and an *io.LimitedReader of an *os.File), so the
// bytes never pass through the process.
//
// When the writer has this power and the store keeps chunks in local
// files (castore.ChunkFiler), [RenderRange] writes the framing itself and
// hands the writer the chunks of files of more than [SingleChunkMax]
// bytes as sections of those files, adjacent sections joined into one,
// rather than reading them; a file that is one chunk it finds as the
// chunk named by the file's digest, without reading a blob index.
// Smaller sections (small files, the ends of large ones) it reads from
// those files itself, in windows of fileWindowSize bytes, so that the
// small files that follow one another in a file (as ingest stores them)
// cost one read between them.
type FileSender interface {
	SendFile(f *os.File, n int64) (int64, error)
}

// sendFileMin is the least a section of a chunk must hold to be sent from
// its file rather than read: each send flushes the framing before it.
const sendFileMin = SingleChunkMax

// fileRun is adjacent chunk sections of one file waiting to be sent
// together.
type fileRun struct {
	f    *os.File
	off  int64 // in f, of the first byte
	n    int64
	segs []fileSeg
}

// fileSeg is one chunk's part of a run: bytes [lo, hi) of chunk ref.
type fileSeg struct {
	ref    castore.ChunkRef
	lo, hi int
}

// joins reports whether p continues the run.
func (r *fileRun) joins(p rangePart) bool {
	return r.n > 0 && !p.read && p.file == r.f && p.fileOff == r.off+r.n
}

// fileWindowSize is how much a fileWindow reads at once.
const fileWindowSize = 128 << 10

// fileWindow holds bytes read ahead from one chunk file, so that the
// small sections that follow one another in it are copied from memory.
type fileWindow struct {
	f   *os.File
	off int64  // in f, of buf[0]
	buf []byte // bytes read from f at off
}

// write writes p's section, read from its file (through the window), to
// w. A file that ends before the section does (damaged since it was
// checked, or closed by its ChunkFiles) has the chunk read from s
// instead. It returns the bytes written.
func (win *fileWindow) write(ctx context.Context, w io.Writer, p rangePart, s Store) (int, error) {
	n := p.hi - p.lo
	if b, ok := win.bytes(p.file, p.fileOff, n); ok {
		return w.Write(b)
	}
	buf, err := readChunk(ctx, s, p.ref, nil)
	if err != nil {
		return 0, err
	}
	return w.Write(buf[p.lo:p.hi])
}

// bytes returns the n bytes of f at off, valid until the next call; ok is
// false when f holds fewer.
func (win *fileWindow) bytes(f *os.File, off int64, n int) ([]byte, bool) {
	if win.f == f && off >= win.off && off+int64(n) <= win.off+int64(len(win.buf)) {
		at := int(off - win.off)
		return win.buf[at : at+n], true
	}
	size := max(n, fileWindowSize)
	if cap(win.buf) < size {
		win.buf = make([]byte, size)
	}
	win.buf = win.buf[:size]
	k, _ := f.ReadAt(win.buf, off) // k < size at the end of f
	if k < n {
		win.f, win.buf = nil, win.buf[:0]
		return nil, false
	}
	win.f, win.off, win.buf = f, off, win.buf[:k]
	return win.buf[:n], true
}

// add appends p's section to the run.
func (r *fileRun) add(p rangePart) {
	if r.n == 0 {
		r.f, r.off = p.file, p.fileOff
	}
	r.n += int64(p.hi - p.lo)
	r.segs = append(r.segs, fileSeg{ref: p.ref, lo: p.lo, hi: p.hi})
}

// send flushes the framing gathered in bw, then sends the run through fs
// and empties it. A file that ends before the run does (damaged since it
// was checked) is finished with the chunks' bytes read from s. It returns
// the bytes written.
func (r *fileRun) send(ctx context.Context, bw interface{ Flush() error }, w io.Writer, fs FileSender, s Store) (int64, error) {
	defer func() { r.n, r.segs = 0, r.segs[:0] }()
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	var sent int64
	if _, err := r.f.Seek(r.off, io.SeekStart); err == nil {
		if sent, err = fs.SendFile(r.f, r.n); err != nil {
			return sent, err
		}
	}
	if sent == r.n {
		return sent, nil
	}
	// The rest, read as chunks.
	var (
		at  int64 // run offset of the segment's first byte
		buf []byte
	)
	written := sent
	for _, g := range r.segs {
		end := at + int64(g.hi-g.lo)
		if end <= sent {
			at = end
			continue
		}
		var err error
		if buf, err = readChunk(ctx, s, g.ref, buf); err != nil {
			return written, err
		}
		lo := g.lo + int(max(0, sent-at))
		k, err := w.Write(buf[lo:g.hi])
		written += int64(k)
		if err != nil {
			return written, err
		}
		at = end
	}
	return written, nil
}
