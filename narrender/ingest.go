package narrender

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/nixcas/nixcas/castore"
)

// Result is what ingesting a NAR yields.
type Result struct {
	Root      castore.Entry // with an empty name
	NARSize   uint64
	NARSha256 [sha256.Size]byte
}

// Ingest reads the NAR in r into s and returns its root entry, size and
// SHA-256. Files are chunked and stored as the NAR streams by; directories
// are stored only once the whole NAR has been read and every chunk is
// stored, children before parents, and the store is synced before Ingest
// returns. So nothing of a rejected NAR is reachable (though chunks of its
// files may remain stored, unreferenced).
func Ingest(ctx context.Context, r io.Reader, s castore.Store, opts castore.WriterOptions) (Result, error) {
	w, err := castore.NewWriter(s, opts)
	if err != nil {
		return Result{}, err
	}
	defer w.Close()
	hr := newHashingReader(r)
	defer hr.Close()
	nr := NewReader(hr)
	in := ingester{nr: nr, w: w}
	root, err := in.run(ctx)
	if err != nil {
		return Result{}, err
	}
	if err := w.Flush(ctx); err != nil {
		return Result{}, err
	}
	for _, d := range in.dirs {
		if _, err := s.PutDirectory(ctx, d); err != nil {
			return Result{}, err
		}
	}
	if err := s.Sync(ctx); err != nil {
		return Result{}, err
	}
	res := Result{Root: root, NARSize: nr.Offset()}
	hr.Sum(res.NARSha256[:0])
	return res, nil
}

type ingester struct {
	nr   *Reader
	w    *castore.Writer
	open []openDir            // directories being read, the root first
	dirs []*castore.Directory // complete directories, children first
}

type openDir struct {
	name string
	dir  castore.Directory
}

func (in *ingester) run(ctx context.Context) (castore.Entry, error) {
	var root castore.Entry
	for {
		h, err := in.nr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return root, err
		}
		// Close the directories h is not inside.
		for len(in.open) > h.Depth {
			in.closeDir(&root)
		}
		e := castore.Entry{Name: h.Name}
		switch h.Type {
		case TypeDirectory:
			in.open = append(in.open, openDir{name: h.Name})
			continue
		case TypeSymlink:
			e.Kind, e.Target = castore.KindSymlink, h.Target
		case TypeRegular:
			d, n, err := in.w.WriteBlob(ctx, in.nr)
			if err != nil {
				return root, err
			}
			if n != h.Size {
				return root, fmt.Errorf("narrender: %q: stored %d bytes of %d", h.Path(), n, h.Size)
			}
			e.Kind, e.Digest, e.Size, e.Executable = castore.KindFile, d, n, h.Executable
		}
		in.add(&root, e)
	}
	for len(in.open) > 0 {
		in.closeDir(&root)
	}
	return root, nil
}

// add puts e into the innermost open directory, or makes it the root.
func (in *ingester) add(root *castore.Entry, e castore.Entry) {
	if len(in.open) == 0 {
		*root = e
		return
	}
	in.open[len(in.open)-1].dir.Add(e)
}

// closeDir completes the innermost open directory.
func (in *ingester) closeDir(root *castore.Entry) {
	od := in.open[len(in.open)-1]
	in.open = in.open[:len(in.open)-1]
	dir := &od.dir
	in.dirs = append(in.dirs, dir)
	e := castore.Entry{Name: od.name, Kind: castore.KindDirectory, Digest: dir.Digest(), Size: dir.Size()}
	in.add(root, e)
}
