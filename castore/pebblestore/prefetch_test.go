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

	s, rt := openTracedPostgres(t, url, dir)
	rt.trips.Store(0)
	renderMatches(t, s, root, nar)
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

// TestPostgresRenderRangePrefetch: a range at the end of a NAR of many
// directories looks up none of the chunks of the files it skips: one
// round trip a directory read, and a few more, not two a directory.
func TestPostgresRenderRangePrefetch(t *testing.T) {
	ctx := context.Background()
	const dirs = 50
	tree := testtree.Entries{}
	for i := range dirs {
		files := testtree.Entries{}
		for j := range 10 {
			files[fmt.Sprintf("f%02d", j)] = testtree.File(testtree.Random(uint64(i*100+j), int64(300+j*40)))
		}
		tree[fmt.Sprintf("d%02d", i)] = testtree.Dir(files)
	}
	url, dir, root, nar := packedPostgresTree(t, testtree.Dir(tree))

	s, rt := openTracedPostgres(t, url, dir)
	off := uint64(len(nar) - 300)
	rt.trips.Store(0)
	var w keepingSender
	if err := narrender.RenderRange(ctx, &w, s, root, off, 300); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Bytes(), nar[off:]) {
		t.Fatalf("rendered %d bytes unlike the last 300 of the NAR", w.Len())
	}
	t.Logf("%d round trips", rt.trips.Load())
	if n := rt.trips.Load(); n > dirs+4 {
		t.Errorf("the last 300 bytes of a NAR of %d directories took %d round trips; want at most %d", dirs, n, dirs+4)
	}
}

// TestPostgresRenderPrefetchAbsent: a render of small files whose chunks
// are in no frame yet (queued for the packer, stored in their records)
// does not ask for each chunk's place again after the look-up ahead
// found it in no frame: one round trip a file (its read), not two.
func TestPostgresRenderPrefetchAbsent(t *testing.T) {
	ctx := context.Background()
	files := testtree.Entries{}
	for i := range 200 {
		files[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Random(uint64(i), int64(500+i*13)))
	}
	tree := testtree.Dir(files)
	var buf bytes.Buffer
	if err := testtree.WriteNAR(&buf, tree); err != nil {
		t.Fatal(err)
	}
	url, dir := testpg.New(t), t.TempDir()
	s, rt := openTracedPostgres(t, url, dir)
	res, err := narrender.Ingest(ctx, bytes.NewReader(buf.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rt.trips.Store(0)
	renderMatches(t, s, res.Root, buf.Bytes())
	t.Logf("%d round trips", rt.trips.Load())
	if n := rt.trips.Load(); n > 200+10 {
		t.Errorf("the render of 200 small files not in frames took %d round trips; want at most 210", n)
	}
}

// TestPostgresRenderPrefetchOneChunkFiles: the chunks of files over 16
// KiB that may be one chunk are looked up ahead too: a warm render asks
// no place of its own for a file that is one chunk, nor for the chunk
// named by the digest of a file cut in several (found in no frame ahead),
// whose blob index and chunks it then reads.
func TestPostgresRenderPrefetchOneChunkFiles(t *testing.T) {
	ctx := context.Background()
	files := testtree.Entries{}
	for i := range 40 {
		files[fmt.Sprintf("f%02d", i)] = testtree.File(testtree.Random(uint64(10+i), int64(17<<10+i*3001)))
	}
	url, dir, root, nar := packedPostgresTree(t, testtree.Dir(files))

	s, rt := openTracedPostgres(t, url, dir)
	d, err := s.GetDirectory(ctx, root.Digest)
	if err != nil {
		t.Fatal(err)
	}
	// Each file cut in several chunks: its blob index, and each chunk's
	// place, a round trip each.
	want, split := 2, 0 // the directory, the look-up ahead
	for _, e := range d.Entries() {
		chunks, err := castore.BlobChunks(ctx, s, e.Digest, e.Size)
		if err != nil {
			t.Fatal(err)
		}
		if len(chunks) > 1 {
			want += 1 + len(chunks)
			split++
		}
	}
	if split == 0 || split == len(files) {
		t.Fatalf("%d of %d files cut in several chunks; the test needs some of each", split, len(files))
	}
	rt.trips.Store(0)
	renderMatches(t, s, root, nar)
	t.Logf("%d round trips, %d files of %d cut in several chunks", rt.trips.Load(), split, len(files))
	if n := rt.trips.Load(); n > int64(want) {
		t.Errorf("the render took %d round trips; want at most %d", n, want)
	}
}

// openTracedPostgres opens the store on PostgreSQL at url and dir, closed
// when the test ends, with the round trips of its connections counted.
func openTracedPostgres(t *testing.T, url, dir string) (*pebblestore.Store, *roundTrips) {
	t.Helper()
	var rt roundTrips
	pebblestore.SetPostgresTracer(&rt)
	s, err := pebblestore.OpenPostgres(context.Background(), url, dir, pebblestore.Options{})
	pebblestore.SetPostgresTracer(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &rt
}

// renderMatches renders root from s and fails the test unless the bytes
// are nar.
func renderMatches(t *testing.T, s *pebblestore.Store, root castore.Entry, nar []byte) {
	t.Helper()
	var w keepingSender
	if err := narrender.Render(context.Background(), &w, s, root); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("rendered %d bytes unlike the %d of the NAR", w.Len(), len(nar))
	}
}
