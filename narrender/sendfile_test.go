package narrender_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// sendingWriter is a writer with the FileSender power: it copies what
// SendFile is given, counting it; damage, when set, runs on the file
// before the first send.
type sendingWriter struct {
	bytes.Buffer
	sent   int64
	sends  int
	damage func(f *os.File)
}

func (w *sendingWriter) SendFile(f *os.File, n int64) (int64, error) {
	if w.damage != nil {
		w.damage(f)
		w.damage = nil
	}
	w.sends++
	k, err := io.CopyN(&w.Buffer, f, n)
	w.sent += k
	if err == io.EOF {
		err = nil
	}
	return k, err
}

// warmStore returns the NAR of a tree of large and small files and a
// store it was ingested into, rendered once (so its decoded frames are on
// disk), closed and reopened: what a restarted server renders from.
func warmStore(t *testing.T) ([]byte, string, castore.Entry) {
	t.Helper()
	return warmTree(t, testtree.Dir(testtree.Entries{
		"big":   testtree.File(testtree.Random(1, 3<<20+123)),
		"mid":   testtree.File(testtree.Random(2, 40<<10)),
		"small": testtree.File(testtree.Text("small file\n")),
		"sub": testtree.Dir(testtree.Entries{
			"large": testtree.File(testtree.Mixed(3, 900<<10)),
			"link":  testtree.Link("../big"),
		}),
	}))
}

// warmTree is warmStore of tree.
func warmTree(t *testing.T, tree *testtree.Node) ([]byte, string, castore.Entry) {
	t.Helper()
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, tree); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := pebblestore.Open(dir, sendStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := narrender.Render(ctx, io.Discard, s, res.Root); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // writes the decoded frames
		t.Fatal(err)
	}
	return nar.Bytes(), dir, res.Root
}

// sendStoreOptions: 1 MiB frames, so that the trees of these tests fill
// several.
var sendStoreOptions = pebblestore.Options{Frames: pebblestore.FrameOptions{Size: 1 << 20}}

func openStore(t *testing.T, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, sendStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRenderReadsSmallFiles: files of at most SingleChunkMax bytes, one
// of exactly that size included, are read from the decoded frames (with
// their neighbours), not sent.
func TestRenderReadsSmallFiles(t *testing.T) {
	nar, dir, root := warmTree(t, testtree.Dir(testtree.Entries{
		"a": testtree.File(testtree.Random(1, narrender.SingleChunkMax)),
		"b": testtree.File(testtree.Random(2, narrender.SingleChunkMax-1)),
		"c": testtree.File(testtree.Random(3, narrender.SingleChunkMax)),
	}))
	s := openStore(t, dir)
	var w sendingWriter
	if err := narrender.Render(context.Background(), &w, s, root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if st := s.DecodedCacheStats(); st.Sent == 0 {
		t.Fatalf("decoded cache after a warm render: %+v; want chunks read from it", st)
	}
	if w.sends != 0 {
		t.Errorf("render of small files: %d bytes sent from files in %d sends; want none, all read", w.sent, w.sends)
	}
}

// TestRenderSendsFiles: to a writer that can send files, a warm render
// sends the chunks of large files from the decoded frames on disk, and
// the bytes are the NAR's, whole and in ranges; a
// writer without the power gets the same bytes, nothing sent.
func TestRenderSendsFiles(t *testing.T) {
	ctx := context.Background()
	nar, dir, root := warmStore(t)
	s := openStore(t, dir)
	size := uint64(len(nar))
	ranges := []struct{ off, n uint64 }{
		{0, size},
		{1, size - 1},
		{200, 300},                    // framing and the first file's start
		{100 << 10, 1 << 20},          // inside the big file, from mid-chunk
		{size - 500<<10, 500<<10 - 1}, // the large file's end and the framing after
		{size - 1, 1},
	}
	for _, r := range ranges {
		var w sendingWriter
		if err := narrender.RenderRange(ctx, &w, s, root, r.off, r.n); err != nil {
			t.Fatalf("range [%d, +%d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(w.Bytes(), nar[r.off:r.off+r.n]) {
			t.Fatalf("range [%d, +%d): %d bytes differ from the NAR's", r.off, r.n, w.Len())
		}
		if r.n == size && w.sent < int64(size)*3/4 {
			t.Fatalf("whole NAR of %d bytes: %d bytes sent from files in %d sends; want most", size, w.sent, w.sends)
		}
	}
	st := s.DecodedCacheStats()
	if st.Sent == 0 || st.Misses != 0 {
		t.Fatalf("decoded cache after warm renders: %+v; want chunks sent and no frame decoded", st)
	}

	var plain bytes.Buffer
	if err := narrender.Render(ctx, &plain, s, root); err != nil || !bytes.Equal(plain.Bytes(), nar) {
		t.Fatalf("render to a plain writer: %d bytes, %v; want the NAR", plain.Len(), err)
	}
	if got := s.DecodedCacheStats(); got.Sent != st.Sent {
		t.Fatalf("a render to a plain writer sent %d chunks from files", got.Sent-st.Sent)
	}
}

// TestRenderSendsDamagedFile: a decoded file damaged after a restart is
// dropped when first opened, before anything is sent from it; one cut
// short while a render sends from it is finished from the frame. Either
// way the render's bytes are the NAR's.
func TestRenderSendsDamagedFile(t *testing.T) {
	ctx := context.Background()
	nar, dir, root := warmStore(t)
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, "decoded"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) < 2 {
		t.Fatalf("decoded files %v, %v; want several", files, err)
	}
	// Damaged while the store was closed: one byte changed in each.
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/3] ^= 0x40
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dir)
	var w sendingWriter
	if err := narrender.Render(ctx, &w, s, root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render over damaged decoded files: %d bytes, %v; want the NAR", w.Len(), err)
	}
	// (Frames decoded again are kept again meanwhile, and may be sent
	// from later in the render.)
	if st := s.DecodedCacheStats(); st.Damaged != uint64(len(files)) {
		t.Fatalf("decoded cache %+v; want the %d damaged files dropped", st, len(files))
	}
	s.Close()

	// Rewritten by that render (on close), then cut short mid-render.
	s = openStore(t, dir)
	w = sendingWriter{damage: func(f *os.File) {
		if err := os.Truncate(f.Name(), 1000); err != nil {
			t.Error(err)
		}
	}}
	if err := narrender.Render(ctx, &w, s, root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render over a decoded file cut short: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if st := s.DecodedCacheStats(); st.Damaged == 0 || st.Sent == 0 {
		t.Fatalf("decoded cache %+v; want chunks sent and the file cut short dropped", st)
	}
}

// smallFilesStore wraps a store to count its chunk reads and, with cut
// set, to cut short the file of the first chunk ChunkFiles hands out,
// right after handing it out.
type smallFilesStore struct {
	*pebblestore.Store
	gets atomic.Int64
	cut  bool
}

func (s *smallFilesStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	s.gets.Add(1)
	return s.Store.GetChunk(ctx, d, dst)
}

func (s *smallFilesStore) ChunkFiles() castore.ChunkFiles {
	return &cuttingFiles{ChunkFiles: s.Store.ChunkFiles(), cut: s.cut}
}

type cuttingFiles struct {
	castore.ChunkFiles
	cut bool
}

func (c *cuttingFiles) ChunkFile(ctx context.Context, d castore.Digest, size uint32) (*os.File, int64, bool) {
	f, off, ok := c.ChunkFiles.ChunkFile(ctx, d, size)
	if ok && c.cut {
		c.cut = false
		if err := os.Truncate(f.Name(), 0); err != nil {
			panic(err)
		}
	}
	return f, off, ok
}

// TestRenderReadsSmallFromFiles: to a writer that can send files, a warm
// render of a tree of many small files reads them from the decoded
// frames on disk (in windows), fetching no chunk, and its bytes are the
// NAR's, whole and in ranges that start and end inside small files; a
// file cut short between being handed out and read has its chunks read
// from the store, and the bytes are still the NAR's.
func TestRenderReadsSmallFromFiles(t *testing.T) {
	ctx := context.Background()
	entries := testtree.Entries{"big": testtree.File(testtree.Random(1, 1<<20+5))}
	for i := range 300 {
		entries[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Random(uint64(10+i), int64(1+i*37%9000)))
	}
	dir, nar, res := warmStoreDir(t, entries)

	s := &smallFilesStore{Store: openStore(t, dir)}
	size := uint64(nar.Len())
	for _, r := range []struct{ off, n uint64 }{{0, size}, {1 << 20, 20000}, {size - 30000, 29999}, {size / 2, 1}} {
		var w sendingWriter
		if err := narrender.RenderRange(ctx, &w, s, res.Root, r.off, r.n); err != nil {
			t.Fatalf("range [%d, +%d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(w.Bytes(), nar.Bytes()[r.off:r.off+r.n]) {
			t.Fatalf("range [%d, +%d): %d bytes differ from the NAR's", r.off, r.n, w.Len())
		}
	}
	if s.gets.Load() != 0 {
		t.Fatalf("warm renders of small files fetched %d chunks; want every one read from its decoded file", s.gets.Load())
	}

	cut := &smallFilesStore{Store: s.Store, cut: true}
	var w sendingWriter
	if err := narrender.Render(ctx, &w, cut, res.Root); err != nil || !bytes.Equal(w.Bytes(), nar.Bytes()) {
		t.Fatalf("render over a decoded file cut short: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if cut.gets.Load() == 0 {
		t.Fatalf("a decoded file cut short under the render: no chunk read from the store; the test shows nothing")
	}
}

// indexCountingStore wraps a store to count its blob index reads.
type indexCountingStore struct {
	*pebblestore.Store
	indexReads atomic.Int64
}

func (s *indexCountingStore) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	s.indexReads.Add(1)
	return s.Store.GetBlobIndex(ctx, d)
}

// TestRenderSendsOneChunkFiles: to a writer that can send files, a warm
// render takes a file over SingleChunkMax that is one chunk from the
// chunk named by the file's own digest, reading no blob index: blob
// indexes are read only for the files cut into several chunks. The
// bytes are the NAR's, whole and in ranges starting inside such files.
func TestRenderSendsOneChunkFiles(t *testing.T) {
	ctx := context.Background()
	entries := testtree.Entries{"big": testtree.File(testtree.Random(1, 1<<20+5))}
	for i := range 40 {
		entries[fmt.Sprintf("f%02d", i)] = testtree.File(testtree.Random(uint64(10+i), int64(17<<10+i*3001)))
	}
	dir, nar, res := warmStoreDir(t, entries)

	s := &indexCountingStore{Store: openStore(t, dir)}
	dirEntries, err := s.GetDirectory(ctx, res.Root.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var split, whole int // files over SingleChunkMax cut in several chunks, and not
	for _, e := range dirEntries.Entries() {
		if e.Kind != castore.KindFile || e.Size <= narrender.SingleChunkMax {
			continue
		}
		chunks, err := castore.BlobChunks(ctx, s.Store, e.Digest, e.Size)
		if err != nil {
			t.Fatal(err)
		}
		if len(chunks) > 1 {
			split++
		} else {
			whole++
		}
	}
	if whole < 5 || split == 0 {
		t.Fatalf("%d files over %d bytes are one chunk and %d several; the test needs some of each", whole, narrender.SingleChunkMax, split)
	}

	size := uint64(nar.Len())
	var w sendingWriter
	if err := narrender.RenderRange(ctx, &w, s, res.Root, 0, size); err != nil || !bytes.Equal(w.Bytes(), nar.Bytes()) {
		t.Fatalf("warm render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if got := s.indexReads.Load(); got != int64(split) {
		t.Fatalf("warm render read %d blob indexes; want %d, one per file cut in several chunks", got, split)
	}
	for _, r := range []struct{ off, n uint64 }{{size / 2, 50000}, {size / 3, 1}, {size - 70000, 69999}} {
		var w sendingWriter
		if err := narrender.RenderRange(ctx, &w, s, res.Root, r.off, r.n); err != nil {
			t.Fatalf("range [%d, +%d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(w.Bytes(), nar.Bytes()[r.off:r.off+r.n]) {
			t.Fatalf("range [%d, +%d): %d bytes differ from the NAR's", r.off, r.n, w.Len())
		}
	}
}

// warmStoreDir ingests the NAR of a directory of entries into a new
// store, renders it once so that its frames are kept decoded, and closes
// the store: the store's directory, the NAR and the ingest's result.
func warmStoreDir(t *testing.T, entries testtree.Entries) (string, *bytes.Buffer, narrender.Result) {
	t.Helper()
	ctx := context.Background()
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, testtree.Dir(entries)); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	s0, err := pebblestore.Open(dir, sendStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar.Bytes()), s0, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s0.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := narrender.Render(ctx, io.Discard, s0, res.Root); err != nil {
		t.Fatal(err)
	}
	if err := s0.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, &nar, res
}
