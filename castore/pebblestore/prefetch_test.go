package pebblestore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// keepingSender is a narrender.FileSender that keeps what it is sent.
type keepingSender struct{ bytes.Buffer }

func (w *keepingSender) SendFile(f *os.File, n int64) (int64, error) {
	return io.CopyN(&w.Buffer, f, n)
}

// TestPostgresRenderPrefetch: a render from a store on PostgreSQL, its
// small files read from decoded frame files, looks their chunks up a
// directory at a time, not one round trip each (those of a directory's
// files after a subdirectory included), and renders the NAR byte for
// byte.
func TestPostgresRenderPrefetch(t *testing.T) {
	ctx := context.Background()
	files, sub := testtree.Entries{}, testtree.Entries{}
	for i := range 300 {
		files[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Random(uint64(i), int64(100+i*7)))
	}
	for i := range 50 {
		sub[fmt.Sprintf("g%02d", i)] = testtree.File(testtree.Random(uint64(1000+i), 2000))
	}
	files["sub"] = testtree.Dir(sub)
	for i := range 50 { // after sub, in the walk
		files[fmt.Sprintf("z%02d", i)] = testtree.File(testtree.Random(uint64(2000+i), 500))
	}
	url, dir, root, nar := packedPostgresTree(t, testtree.Dir(files))

	var rt roundTrips
	pebblestore.SetPostgresTracer(&rt)
	s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{})
	pebblestore.SetPostgresTracer(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rt.trips.Store(0)
	var w keepingSender
	if err := narrender.Render(ctx, &w, s, root); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("rendered %d bytes unlike the %d of the NAR", w.Len(), len(nar))
	}
	// Two directories read, two look-ups of their small files' chunks;
	// a few more allowed, far from one a file.
	if n := rt.trips.Load(); n > 10 {
		t.Errorf("the render of 400 small files sent PostgreSQL %d round trips; want at most 10", n)
	}
}

// packedPostgresTree ingests tree into a new store on a private
// PostgreSQL with its frames in dir, packs every chunk, renders it once
// (so that its frames are decoded onto disk) and closes the store. It
// returns the database, dir, the tree's root entry and its NAR.
func packedPostgresTree(tb testing.TB, tree *testtree.Node) (url, dir string, root castore.Entry, nar []byte) {
	tb.Helper()
	var buf bytes.Buffer
	if err := testtree.WriteNAR(&buf, tree); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	url, dir = testpg.New(tb), tb.TempDir()
	s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	res, err := narrender.Ingest(ctx, bytes.NewReader(buf.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.PackPending(ctx); err != nil {
		tb.Fatal(err)
	}
	if err := narrender.Render(ctx, new(keepingSender), s, res.Root); err != nil {
		tb.Fatal(err)
	}
	return url, dir, res.Root, buf.Bytes()
}
