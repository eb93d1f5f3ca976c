package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// cacheOptions are the options nixcas pull opens its cache with.
var cacheOptions = pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Off: true, DecodedCacheSize: -1}}

// renderSum renders the tree at root from s and returns its NAR's
// SHA-256 and size.
func renderSum(t *testing.T, s castore.Store, root castore.Entry) ([sha256.Size]byte, uint64) {
	t.Helper()
	h := sha256.New()
	var n countWriter
	if err := narrender.Render(context.Background(), io.MultiWriter(h, &n), s, root); err != nil {
		t.Fatal(err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, uint64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// checkCacheCounters: the cache's counters agree with a recount.
func checkCacheCounters(t *testing.T, s *pebblestore.Store) castore.Stats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	re, err := s.Recount(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st != re {
		t.Fatalf("cache counters %+v, recount %+v", st, re)
	}
	return st
}

// frameFilesIn returns the frame files of the store in dir, by name.
func frameFilesIn(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[d.Name()] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPullImportsFrames: a pull stores the frames it receives whole in
// its cache as they came (the same bytes as the server's frame files),
// once each, with the cache's counters right; the cache then renders the
// tree byte for byte, after a reopen too, passes a verification that
// reads every chunk, pushes the tree to another server, compacts, and
// is collected.
func TestPullImportsFrames(t *testing.T) {
	ctx := context.Background()
	ts := startFramedServer(t)
	res := ingestNode(t, ts.store, frameTree())
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cache, err := pebblestore.Open(cacheDir, cacheOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cache.Close() }()
	dst := filepath.Join(t.TempDir(), "out")
	st, err := pullWith(t, ts.addr, client.Options{Cache: cache}, res.Root, dst)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, dst, res)

	server, cached := frameFilesIn(t, ts.dir), frameFilesIn(t, cacheDir)
	if len(ts.asked.frames) == 0 || len(cached) != len(ts.asked.frames) {
		t.Fatalf("the cache holds %d frame files; the pull fetched %d frames whole", len(cached), len(ts.asked.frames))
	}
	for _, name := range ts.asked.frames {
		if b, ok := cached[name.String()]; !ok || !bytes.Equal(b, server[name.String()]) {
			t.Errorf("frame %s: in the cache %v, the same bytes as the server's %v", name, ok, bytes.Equal(b, server[name.String()]))
		}
	}
	cst := checkCacheCounters(t, cache)
	// The chunks fetched, and the empty one of the empty file.
	if cst.Frames != uint64(len(cached)) || cst.Chunks != st.ChunksFetched+1 {
		t.Errorf("cache stats %+v; %d frame files, %d chunks fetched and the empty one", cst, len(cached), st.ChunksFetched)
	}
	wantSum, wantSize := res.NARSha256, res.NARSize
	if sum, size := renderSum(t, cache, res.Root); sum != wantSum || size != wantSize {
		t.Fatalf("the NAR rendered from the cache differs (%d bytes, want %d)", size, wantSize)
	}

	// Reopened: the same bytes.
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
	if cache, err = pebblestore.Open(cacheDir, cacheOptions); err != nil {
		t.Fatal(err)
	}
	if sum, _ := renderSum(t, cache, res.Root); sum != wantSum {
		t.Fatal("the NAR rendered from the reopened cache differs")
	}
	if got := checkCacheCounters(t, cache); got != cst {
		t.Errorf("cache stats after reopening %+v, before %+v", got, cst)
	}

	// Every chunk read through its frame and re-hashed.
	rep, err := store.NewIndex(cache, cache).Verify(ctx, store.VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify of the cache: %v, %+v", err, rep.Problems)
	}

	// Pushed from the cache to another server: the tree arrives whole.
	other := startFramedServer(t)
	c, err := client.Dial(other.addr, client.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PushTree(ctx, res.Root); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if sum, _ := renderSum(t, other.store, res.Root); sum != wantSum {
		t.Fatal("the tree pushed from the cache differs")
	}

	// Compacted, then collected keeping the tree: still whole.
	if _, err := cache.Compact(ctx, pebblestore.CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	keep := func(ctx context.Context, yield func(string, castore.Entry) error) error {
		return yield("tree", res.Root)
	}
	if _, err := cache.GC(ctx, pebblestore.GCOptions{Roots: keep, RewriteBelow: 0.5}); err != nil {
		t.Fatal(err)
	}
	if sum, _ := renderSum(t, cache, res.Root); sum != wantSum {
		t.Fatal("the NAR rendered from the compacted and collected cache differs")
	}
	checkCacheCounters(t, cache)

	// Collected with nothing kept: empty, its frame files gone.
	none := func(context.Context, func(string, castore.Entry) error) error { return nil }
	if _, err := cache.GC(ctx, pebblestore.GCOptions{Roots: none}); err != nil {
		t.Fatal(err)
	}
	if got := checkCacheCounters(t, cache); got.Chunks != 0 || got.Frames != 0 {
		t.Errorf("cache stats after collecting everything: %+v", got)
	}
	if files := frameFilesIn(t, cacheDir); len(files) != 0 {
		t.Errorf("%d frame files left after collecting everything", len(files))
	}
}

// TestPullImportedFrameDamaged: a frame file of the cache damaged after
// the pull is found by a verification that reads the data, and a render
// from the cache fails naming it rather than giving wrong bytes.
func TestPullImportedFrameDamaged(t *testing.T) {
	ctx := context.Background()
	ts := startFramedServer(t)
	res := ingestNode(t, ts.store, frameTree())
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(t.TempDir(), "cache")
	cache, err := pebblestore.Open(cacheDir, cacheOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cache.Close() }()
	if _, err := pullWith(t, ts.addr, client.Options{Cache: cache}, res.Root, filepath.Join(t.TempDir(), "out")); err != nil {
		t.Fatal(err)
	}
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
	name := ts.asked.frames[0].String()
	p := filepath.Join(cacheDir, "frames", name[:2], name)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if cache, err = pebblestore.Open(cacheDir, cacheOptions); err != nil {
		t.Fatal(err)
	}
	rep, err := store.NewIndex(cache, cache).Verify(ctx, store.VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, pr := range rep.Problems {
		found = found || strings.Contains(pr.Detail, name)
	}
	if !found {
		t.Errorf("verify found %+v, nothing naming frame %s", rep.Problems, name)
	}
}

// TestPullHeldOverBudget: with a memory budget of two frames, streams
// wait for the writers, frames the writers are done with leave memory,
// and a file written again far later in the tree (the same blob twice)
// is read back from the cache: the tree arrives whole, the cache
// consistent.
func TestPullHeldOverBudget(t *testing.T) {
	ctx := context.Background()
	client.SetHeldLimits(t, 128<<10, 64<<10)
	ts := startFramedServer(t)
	tool := testtree.Exec(testtree.Mixed(1, 900<<10))
	tree := frameTree()
	tree.Entries["zz-copy"] = testtree.Dir(testtree.Entries{"tool": tool})
	res := ingestNode(t, ts.store, tree)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	cache := openCache(t)
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := pullWith(t, ts.addr, client.Options{Cache: cache, Streams: 4}, res.Root, dst); err != nil {
		t.Fatal(err)
	}
	checkPulled(t, dst, res)
	if len(ts.asked.frames) < 10 {
		t.Errorf("%d frames fetched whole, want many more than the budget holds", len(ts.asked.frames))
	}
	checkCacheCounters(t, cache)
	if sum, _ := renderSum(t, cache, res.Root); sum != res.NARSha256 {
		t.Fatal("the NAR rendered from the cache differs")
	}
}
