package narrender_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// coldFilesStore is a store whose ChunkFiles hold no chunk (a store whose
// frames are not decoded yet), counting what they are asked for.
type coldFilesStore struct {
	*castore.MemoryStore
	mu    sync.Mutex
	asked map[castore.Digest]int
}

func (s *coldFilesStore) ChunkFiles() castore.ChunkFiles { return coldFiles{s} }

type coldFiles struct{ s *coldFilesStore }

func (c coldFiles) ChunkFile(_ context.Context, d castore.Digest, _ uint32) (*os.File, int64, bool) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.asked[d]++
	return nil, 0, false
}

func (coldFiles) Close() error { return nil }

// ingestTree writes tree as a NAR and ingests it into s, returning the
// NAR's bytes and the ingest's result.
func ingestTree(t *testing.T, s castore.Store, tree *testtree.Node) ([]byte, narrender.Result) {
	t.Helper()
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, tree); err != nil {
		t.Fatal(err)
	}
	res, err := narrender.Ingest(context.Background(), bytes.NewReader(nar.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return nar.Bytes(), res
}

// TestRenderAsksChunkFileOnce: a file over SingleChunkMax that is one
// chunk, not in a local file, has its chunk asked for once (where each
// ask is a round trip on a shared database), not once as the file's own
// chunk and again as the one chunk of its blob.
func TestRenderAsksChunkFileOnce(t *testing.T) {
	ctx := context.Background()
	entries := testtree.Entries{}
	for i := range 20 {
		entries[fmt.Sprintf("f%02d", i)] = testtree.File(testtree.Random(uint64(10+i), int64(17<<10+i*5001)))
	}
	s := &coldFilesStore{MemoryStore: new(castore.MemoryStore), asked: map[castore.Digest]int{}}
	nar, res := ingestTree(t, s, testtree.Dir(entries))
	var w sendingWriter
	if err := narrender.Render(ctx, &w, s, res.Root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if len(s.asked) < 20 {
		t.Fatalf("%d chunks asked for; want at least one a file", len(s.asked))
	}
	for d, n := range s.asked {
		if n > 1 {
			t.Errorf("chunk %s asked for %d times; want once", d, n)
		}
	}
}

// prefetchingStore is a store whose ChunkFiles hold no chunk but look
// chunks up ahead (as on PostgreSQL), recording what they are asked to.
type prefetchingStore struct {
	*castore.MemoryStore
	asked   map[castore.Digest]int // by PrefetchChunkFiles, ever
	fresh   map[castore.Digest]int // asked while not held: looked up
	live    map[castore.Digest]int // asked and not dropped
	held    int                    // sum of live
	maxHeld int
}

func newPrefetchingStore() *prefetchingStore {
	return &prefetchingStore{MemoryStore: new(castore.MemoryStore), asked: map[castore.Digest]int{}, fresh: map[castore.Digest]int{}, live: map[castore.Digest]int{}}
}

func (s *prefetchingStore) ChunkFiles() castore.ChunkFiles { return prefetchingFiles{s} }

type prefetchingFiles struct{ s *prefetchingStore }

func (prefetchingFiles) ChunkFile(context.Context, castore.Digest, uint32) (*os.File, int64, bool) {
	return nil, 0, false
}

func (prefetchingFiles) Close() error { return nil }

func (c prefetchingFiles) PrefetchChunkFiles(_ context.Context, ds []castore.Digest) {
	for _, d := range ds {
		c.s.asked[d]++
		if c.s.live[d] == 0 {
			c.s.fresh[d]++
		}
		c.s.live[d]++
	}
	c.s.held += len(ds)
	c.s.maxHeld = max(c.s.maxHeld, c.s.held)
}

func (c prefetchingFiles) DropChunkFiles(ds []castore.Digest) {
	for _, d := range ds {
		if c.s.live[d] == 0 {
			panic(fmt.Sprintf("chunk %s dropped more often than asked", d))
		}
		c.s.live[d]--
		c.s.held--
	}
}

// TestRenderRangePrefetch: a range render looks ahead only the chunks of
// files from the first one it sends (none of the files before the range,
// which it skips), and drops every window it looked up: at the end of a
// render nothing is held, whether the range ends at the NAR's end or
// within it.
func TestRenderRangePrefetch(t *testing.T) {
	ctx := context.Background()
	tree := testtree.Entries{}
	for i := range 10 {
		files := testtree.Entries{}
		for j := range 30 {
			files[fmt.Sprintf("f%02d", j)] = testtree.File(testtree.Random(uint64(i*100+j), int64(200+j*50)))
		}
		tree[fmt.Sprintf("d%d", i)] = testtree.Dir(files)
	}
	ingest := newPrefetchingStore()
	nar, res := ingestTree(t, ingest, testtree.Dir(tree))
	contents := map[castore.Digest]uint64{} // each file's end in the NAR
	if _, err := narrender.Walk(ctx, ingest, res.Root, func(n narrender.Node) error {
		if n.Entry.Kind == castore.KindFile {
			contents[n.Entry.Digest] = n.Contents + n.Entry.Size
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	size := uint64(len(nar))
	for _, r := range []struct{ off, n uint64 }{{0, size}, {size - 300, 300}, {size / 2, size / 10}, {size / 3, 1}} {
		s := newPrefetchingStore()
		s.MemoryStore = ingest.MemoryStore
		var w sendingWriter
		if err := narrender.RenderRange(ctx, &w, s, res.Root, r.off, r.n); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.Bytes(), nar[r.off:r.off+r.n]) {
			t.Fatalf("range [%d, +%d): %d bytes unlike the NAR's", r.off, r.n, w.Len())
		}
		if len(s.asked) == 0 {
			t.Errorf("range [%d, +%d): no chunk looked up ahead", r.off, r.n)
		}
		for d := range s.asked {
			if end := contents[d]; end <= r.off {
				t.Errorf("range [%d, +%d): chunk of a file ending at %d, before the range, looked up", r.off, r.n, end)
			}
		}
		if s.held != 0 {
			t.Errorf("range [%d, +%d): %d chunks looked up ahead still held at its end; want none", r.off, r.n, s.held)
		}
	}
}

// TestRenderPrefetchDroppedOnError: a render its writer fails, stopped
// within directories, drops their windows all the same.
func TestRenderPrefetchDroppedOnError(t *testing.T) {
	ctx := context.Background()
	tree := testtree.Entries{}
	for i := range 20 { // more parts than the render queues ahead
		files := testtree.Entries{}
		for j := range 200 {
			files[fmt.Sprintf("f%03d", j)] = testtree.File(testtree.Random(uint64(i*1000+j), int64(100+j)))
		}
		tree[fmt.Sprintf("d%02d", i)] = testtree.Dir(files)
	}
	s := newPrefetchingStore()
	_, res := ingestTree(t, s, testtree.Dir(tree))
	clear(s.asked)
	if err := narrender.Render(ctx, failingSender{}, s, res.Root); !errors.Is(err, errSend) {
		t.Fatalf("render to a failing writer: %v; want %v", err, errSend)
	}
	if len(s.asked) == 0 || s.held != 0 {
		t.Errorf("render to a failing writer: %d chunks looked up ahead, %d still held at its end; want some, none held", len(s.asked), s.held)
	}
}

var errSend = errors.New("send failed")

// failingSender is a narrender.FileSender that fails every write.
type failingSender struct{}

func (failingSender) Write([]byte) (int, error)               { return 0, errSend }
func (failingSender) SendFile(*os.File, int64) (int64, error) { return 0, errSend }

// TestRenderPrefetchBounded: the chunks of a huge directory are looked
// up a bounded window at a time, not all before its first file is sent:
// a range of its first file looks up 256 at most, and a whole render
// never holds more than two windows of 1,024 (the next one is looked up
// before the one passed is dropped).
func TestRenderPrefetchBounded(t *testing.T) {
	ctx := context.Background()
	files := testtree.Entries{}
	for i := range 5000 {
		files[fmt.Sprintf("f%04d", i)] = testtree.File(testtree.Random(uint64(i), int64(100+i%50)))
	}
	s := newPrefetchingStore()
	nar, res := ingestTree(t, s, testtree.Dir(files))
	var first uint64
	if _, err := narrender.Walk(ctx, s, res.Root, func(n narrender.Node) error {
		if n.Entry.Kind == castore.KindFile && first == 0 {
			first = n.Contents
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := narrender.RenderRange(ctx, new(sendingWriter), s, res.Root, first, 10); err != nil {
		t.Fatal(err)
	}
	if len(s.asked) > 256 {
		t.Errorf("a range of the first file of 5,000 looked %d chunks up ahead; want at most 256", len(s.asked))
	}
	s.asked, s.live, s.held, s.maxHeld = map[castore.Digest]int{}, map[castore.Digest]int{}, 0, 0
	var w sendingWriter
	if err := narrender.Render(ctx, &w, s, res.Root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if len(s.asked) != 5000 || s.maxHeld > 2*1024 || s.held != 0 {
		t.Errorf("render of 5,000 files looked up %d chunks ahead, at most %d at once, %d held at its end; want 5,000, at most 2,048, none", len(s.asked), s.maxHeld, s.held)
	}
}

// TestRenderPrefetchKeepsOverlap: a chunk in a directory's window and in
// the next one is held from one to the other, looked up once, not
// dropped and looked up again.
func TestRenderPrefetchKeepsOverlap(t *testing.T) {
	ctx := context.Background()
	files := testtree.Entries{}
	for i := range 600 { // two windows, every file the same
		files[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Text("the same small file\n"))
	}
	s := newPrefetchingStore()
	nar, res := ingestTree(t, s, testtree.Dir(files))
	var w sendingWriter
	if err := narrender.Render(ctx, &w, s, res.Root); err != nil || !bytes.Equal(w.Bytes(), nar) {
		t.Fatalf("render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if len(s.fresh) != 1 || s.held != 0 {
		t.Fatalf("render of 600 files of one chunk: %d chunks looked up, %d held at its end; want 1, none", len(s.fresh), s.held)
	}
	for d, n := range s.fresh {
		if n != 1 || s.asked[d] < 600 {
			t.Errorf("chunk named %d times in windows, looked up %d times; want 600, once", s.asked[d], n)
		}
	}
}
