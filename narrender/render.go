package narrender

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nixcas/nixcas/castore"
)

// Store is what rendering reads: directories, blob indexes and chunks.
type Store interface {
	castore.ChunkStore
	castore.BlobIndexStore
	castore.DirectoryStore
}

// renderAhead bounds the chunks being fetched ahead of the writer.
const renderAhead = 32

// Render writes the NAR of the tree at root to w. A walker goroutine reads
// directories and queues chunk fetches ahead of the writer, so reading,
// decompressing and verifying overlap with writing. Every chunk is checked
// against its digest and every directory against its digest and size
// before use; a mismatch is an error wrapping castore.ErrCorrupt, and w
// then holds a partial NAR.
func Render(ctx context.Context, w io.Writer, s Store, root castore.Entry) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := castore.NewFetcher(ctx, s, 0)
	defer f.Close()
	parts := make(chan part, renderAhead)
	go func() {
		defer close(parts)
		wk := walker{ctx: ctx, s: s, f: f, out: parts, buf: make([]byte, 0, 32<<10)}
		wk.buf = appendString(wk.buf, magic)
		err := wk.node(root, "")
		if err == nil {
			err = wk.flush()
		}
		if err != nil {
			select {
			case parts <- part{err: err}:
			case <-ctx.Done():
			}
		}
	}()

	bw := bufio.NewWriterSize(w, 256<<10)
	var err error
	for p := range parts {
		if err != nil {
			if p.chunk != nil {
				p.chunk.Release()
			}
			continue // drain, so the walker ends
		}
		err = p.write(bw)
		if err != nil {
			cancel()
		}
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// part is a piece of the NAR in order: framing bytes, a chunk of file
// contents, or the error that ended the walk.
type part struct {
	lit   []byte
	chunk *castore.PendingChunk
	err   error
}

func (p part) write(w io.Writer) error {
	switch {
	case p.err != nil:
		return p.err
	case p.chunk != nil:
		defer p.chunk.Release()
		data, err := p.chunk.Wait()
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	_, err := w.Write(p.lit)
	return err
}

// walker produces the parts of a NAR, depth first in NAR order.
type walker struct {
	ctx context.Context
	s   Store
	f   *castore.Fetcher
	out chan<- part
	buf []byte // framing not yet sent
}

func (wk *walker) send(p part) error {
	select {
	case wk.out <- p:
		return nil
	case <-wk.ctx.Done():
		if p.chunk != nil {
			p.chunk.Release()
		}
		return wk.ctx.Err()
	}
}

// flush sends the framing gathered so far.
func (wk *walker) flush() error {
	if len(wk.buf) == 0 {
		return nil
	}
	lit := wk.buf
	wk.buf = make([]byte, 0, cap(lit))
	return wk.send(part{lit: lit})
}

func (wk *walker) node(e castore.Entry, path string) error {
	wk.buf = appendString(appendString(wk.buf, "("), "type")
	switch e.Kind {
	case castore.KindFile:
		return wk.file(e, path)
	case castore.KindSymlink:
		wk.buf = appendString(appendString(appendString(wk.buf, "symlink"), "target"), e.Target)
	case castore.KindDirectory:
		if err := wk.directory(e, path); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: %q: entry of %v", castore.ErrInvalid, path, e.Kind)
	}
	wk.buf = appendString(wk.buf, ")")
	return nil
}

func (wk *walker) file(e castore.Entry, path string) error {
	wk.buf = appendString(wk.buf, "regular")
	if e.Executable {
		wk.buf = appendString(appendString(wk.buf, "executable"), "")
	}
	wk.buf = appendString(wk.buf, "contents")
	wk.buf = binary.LittleEndian.AppendUint64(wk.buf, e.Size)
	if e.Size > 0 {
		chunks, err := castore.BlobChunks(wk.ctx, wk.s, e.Digest, e.Size)
		if err != nil {
			return fmt.Errorf("narrender: %q: %w", path, err)
		}
		if err := wk.flush(); err != nil {
			return err
		}
		for _, c := range chunks {
			if err := wk.send(part{chunk: wk.f.Fetch(c)}); err != nil {
				return err
			}
		}
	}
	wk.buf = append(wk.buf, make([]byte, padding(e.Size))...)
	wk.buf = appendString(wk.buf, ")")
	return nil
}

func (wk *walker) directory(e castore.Entry, path string) error {
	dir, err := wk.s.GetDirectory(wk.ctx, e.Digest)
	if err != nil {
		return fmt.Errorf("narrender: %q: %w", path, err)
	}
	if got := dir.Size(); got != e.Size {
		return fmt.Errorf("%w: %q: directory %s has size %d, its entry says %d", castore.ErrCorrupt, path, e.Digest, got, e.Size)
	}
	wk.buf = appendString(wk.buf, "directory")
	entries := dir.Entries()
	slices.SortFunc(entries, func(a, b castore.Entry) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range entries {
		wk.buf = appendString(appendString(appendString(appendString(wk.buf, "entry"), "("), "name"), c.Name)
		wk.buf = appendString(wk.buf, "node")
		p := c.Name
		if path != "" {
			p = path + "/" + c.Name
		}
		if err := wk.node(c, p); err != nil {
			return err
		}
		wk.buf = appendString(wk.buf, ")")
		if len(wk.buf) >= 32<<10 {
			if err := wk.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendString appends s in NAR string encoding.
func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	b = append(b, s...)
	return append(b, make([]byte, padding(uint64(len(s))))...)
}

// padding is the number of zero bytes after a string of n bytes.
func padding(n uint64) int { return int((8 - n%8) % 8) }
