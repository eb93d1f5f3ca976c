package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// testServer is the real gRPC server on a loopback listener, over a Pebble
// store.
type testServer struct {
	addr  string
	store *pebblestore.Store
	reg   *prometheus.Registry
	srv   *grpc.Server
}

func startServer(t *testing.T, extra ...grpc.ServerOption) *testServer {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "server"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s), Registerer: reg}, extra...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Stop()
		s.Close()
	})
	return &testServer{addr: ln.Addr().String(), store: s, reg: reg, srv: srv}
}

// calls returns the number of calls the server has handled.
func (ts *testServer) calls(t *testing.T) uint64 { return grpcCalls(t, ts.reg, "") }

// grpcCalls returns the number of calls a server with the metrics reg has
// handled of the methods whose full name ends with method
// ("PathInfoService/List"; "" for every method).
func grpcCalls(t *testing.T, reg *prometheus.Registry, method string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, f := range families {
		if f.GetName() != "nixcas_grpc_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && strings.HasSuffix(l.GetValue(), method) {
					n += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

func dial(t *testing.T, addr string, cache castore.Store) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, client.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ingest reads the NAR from r into cache.
func ingest(t testing.TB, cache castore.Store, r io.Reader) narrender.Result {
	t.Helper()
	res, err := narrender.Ingest(context.Background(), r, cache, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// ingestNode ingests the NAR of a test tree, without touching the disk.
func ingestNode(t testing.TB, cache castore.Store, n *testtree.Node) narrender.Result {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(testtree.WriteNAR(pw, n)) }()
	defer pr.Close()
	return ingest(t, cache, pr)
}

// narSum returns the SHA-256 and size of the NAR of path.
func narSum(t *testing.T, path string) ([sha256.Size]byte, uint64) {
	t.Helper()
	r := client.DumpReader(path)
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum, uint64(n)
}

func TestDumpReaderMatchesNAR(t *testing.T) {
	dir := t.TempDir()
	for _, tree := range testtree.EdgeCases() {
		path := filepath.Join(dir, tree.Name)
		if !tree.Root.FitsPathMax(path) {
			continue
		}
		testtree.Build(t, path, tree.Root)
		var want bytes.Buffer
		if err := testtree.WriteNAR(&want, tree.Root); err != nil {
			t.Fatal(err)
		}
		r := client.DumpReader(path)
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %v", tree.Name, err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: DumpReader gives %d bytes, not the %d-byte NAR", tree.Name, len(got), want.Len())
		}
	}
}

// TestPushPull pushes every edge-case tree from a directory, pulls it into
// another directory through a second client, and checks that the copy has
// the same NAR; pushing again sends nothing, pulling again fetches nothing.
func TestPushPull(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	pushCache, pullCache := new(castore.MemoryStore), new(castore.MemoryStore)
	pusher, puller := dial(t, ts.addr, pushCache), dial(t, ts.addr, pullCache)
	src, dst := t.TempDir(), t.TempDir()
	for _, tree := range testtree.EdgeCases() {
		t.Run(tree.Name, func(t *testing.T) {
			path := filepath.Join(src, tree.Name)
			out := filepath.Join(dst, tree.Name)
			if !tree.Root.FitsPathMax(out) {
				// Paths longer than PATH_MAX: pushed from the NAR, and
				// the pull fails (paths are written whole) leaving
				// nothing behind.
				res := ingestNode(t, pushCache, tree.Root)
				if _, err := pusher.PushTree(ctx, res.Root); err != nil {
					t.Fatal(err)
				}
				if _, err := puller.Pull(ctx, res.Root, out); err == nil {
					t.Fatal("pull of paths longer than PATH_MAX succeeded")
				}
				if left, _ := os.ReadDir(dst); slices.ContainsFunc(left, func(e os.DirEntry) bool { return strings.Contains(e.Name(), tree.Name) }) {
					t.Errorf("the failed pull left %v", left)
				}
				return
			}
			testtree.Build(t, path, tree.Root)
			r := client.DumpReader(path)
			res := ingest(t, pushCache, r)
			r.Close()

			st, err := pusher.PushTree(ctx, res.Root)
			if err != nil {
				t.Fatal(err)
			}
			again, err := pusher.PushTree(ctx, res.Root)
			if err != nil {
				t.Fatal(err)
			}
			if again.BytesSent != 0 || again.ChunksSent != 0 || again.ChunksSkipped != st.ChunksSent+st.ChunksSkipped {
				t.Errorf("second push: %+v after %+v; want nothing sent, all skipped", again, st)
			}
			if err := store.CheckTree(ctx, ts.store, res.Root); err != nil {
				t.Fatalf("the server's tree after the push: %v", err)
			}

			calls := ts.calls(t)
			pst, err := puller.Pull(ctx, res.Root, out)
			if err != nil {
				t.Fatal(err)
			}
			if calls := ts.calls(t) - calls; calls > 8 {
				t.Errorf("the pull took %d calls", calls)
			}
			if sum, size := narSum(t, out); sum != res.NARSha256 || size != res.NARSize {
				t.Fatalf("pulled tree has a NAR of %d bytes, %x; want %d bytes, %x", size, sum, res.NARSize, res.NARSha256)
			}
			again2, err := puller.Pull(ctx, res.Root, out+".again")
			if err != nil {
				t.Fatal(err)
			}
			if again2.ChunksFetched != 0 || again2.BytesReceived != 0 || again2.ChunksFromCache != pst.ChunksFetched+pst.ChunksFromCache {
				t.Errorf("second pull: %+v after %+v; want everything from the cache", again2, pst)
			}
			if _, err := puller.Pull(ctx, res.Root, out); err == nil {
				t.Errorf("pull over an existing path succeeded")
			}
		})
	}
}

// TestCompressionNone moves chunks in their stored form: the pushed and
// pulled trees are the same, and the server stores every chunk it is sent.
func TestCompressionNone(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	cache := new(castore.MemoryStore)
	res := ingestNode(t, cache, testtree.Dedup().Root)
	c, err := client.Dial(ts.addr, client.Options{Cache: cache, Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.PushTree(ctx, res.Root)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := cache.Stats(ctx)
	server, _ := ts.store.Stats(ctx)
	if server.UniqueChunkBytes != local.UniqueChunkBytes || server.Chunks != local.Chunks || st.BytesSent < local.StoredBytes {
		t.Errorf("server stats %+v, the client's cache %+v, %d bytes sent", server, local, st.BytesSent)
	}
	pull, err := client.Dial(ts.addr, client.Options{Cache: new(castore.MemoryStore), Compression: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer pull.Close()
	out := filepath.Join(t.TempDir(), "out")
	if _, err := pull.Pull(ctx, res.Root, out); err != nil {
		t.Fatal(err)
	}
	if sum, _ := narSum(t, out); sum != res.NARSha256 {
		t.Errorf("pulled tree differs")
	}
	if _, err := client.Dial(ts.addr, client.Options{Cache: cache, Compression: "gzip"}); err == nil {
		t.Errorf("Dial accepted compression gzip")
	}
}

// TestPullManySmallFiles pulls a tree of thousands of small files in a
// handful of calls.
func TestPullManySmallFiles(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	entries := testtree.Entries{}
	for i := range 40 {
		sub := testtree.Entries{}
		for j := range 100 {
			sub[fmt.Sprintf("f%03d", j)] = testtree.File(testtree.Text(fmt.Sprintf("file %d/%d\n", i, j)))
		}
		entries[fmt.Sprintf("d%02d", i)] = testtree.Dir(sub)
	}
	cache := new(castore.MemoryStore)
	res := ingestNode(t, cache, testtree.Dir(entries))
	if _, err := dial(t, ts.addr, cache).PushTree(ctx, res.Root); err != nil {
		t.Fatal(err)
	}
	calls := ts.calls(t)
	out := filepath.Join(t.TempDir(), "out")
	st, err := dial(t, ts.addr, new(castore.MemoryStore)).Pull(ctx, res.Root, out)
	if err != nil {
		t.Fatal(err)
	}
	if calls = ts.calls(t) - calls; calls > 6 {
		t.Errorf("pulling 4000 files took %d calls", calls)
	}
	if st.ChunksFetched != 4000 {
		t.Errorf("pull: %+v, want 4000 chunks fetched", st)
	}
	if sum, _ := narSum(t, out); sum != res.NARSha256 {
		t.Errorf("pulled tree differs")
	}
}

// TestConcurrentPushes pushes 16 overlapping trees at once, from 16
// clients with caches of their own, and checks the server stored each
// distinct chunk once.
func TestConcurrentPushes(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	const clients = 16
	type pushed struct {
		cache *castore.MemoryStore
		res   narrender.Result
	}
	trees := make([]pushed, clients)
	for i := range trees {
		n := testtree.Dir(testtree.Entries{
			"shared-by-all": testtree.File(testtree.Random(1, 600_000)),
			"shared-text":   testtree.File(testtree.Mixed(2, 400_000)),
			"neighbours":    testtree.Exec(testtree.Random(uint64(100+i%4), 300_000)),
			"edited":        testtree.File(testtree.Insert(testtree.Random(3, 1<<20), int64(i)*50_000, []byte(fmt.Sprintf("client %d", i)))),
			"own":           testtree.Dir(testtree.Entries{"x": testtree.File(testtree.Random(uint64(1000+i), 200_000))}),
			"small":         testtree.File(testtree.Text(fmt.Sprintf("small %d\n", i%3))),
			"empty":         testtree.File(testtree.Empty()),
			"link":          testtree.Link("shared-by-all"),
		})
		trees[i].cache = new(castore.MemoryStore)
		trees[i].res = ingestNode(t, trees[i].cache, n)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, clients)
	for i := range trees {
		c := dial(t, ts.addr, trees[i].cache)
		wg.Go(func() {
			<-start
			_, errs[i] = c.PushTree(ctx, trees[i].res.Root)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	// The distinct chunks of all the trees, from the clients' caches.
	distinct := map[castore.Digest]uint32{}
	for _, p := range trees {
		for _, r := range treeChunks(t, p.cache, p.res.Root) {
			distinct[r.Digest] = r.Size
		}
	}
	var bytes uint64
	for _, size := range distinct {
		bytes += uint64(size)
	}
	st, err := ts.store.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks != uint64(len(distinct)) || st.UniqueChunkBytes != bytes {
		t.Errorf("server holds %d chunks of %d bytes; the trees have %d distinct chunks of %d bytes", st.Chunks, st.UniqueChunkBytes, len(distinct), bytes)
	}
	for i, p := range trees {
		if err := store.CheckTree(ctx, ts.store, p.res.Root); err != nil {
			t.Errorf("tree %d incomplete on the server: %v", i, err)
		}
	}
	// One of them, pulled back.
	out := filepath.Join(t.TempDir(), "out")
	if _, err := dial(t, ts.addr, new(castore.MemoryStore)).Pull(ctx, trees[5].res.Root, out); err != nil {
		t.Fatal(err)
	}
	if sum, _ := narSum(t, out); sum != trees[5].res.NARSha256 {
		t.Errorf("tree pulled back differs")
	}
}

// treeChunks lists the chunks of every file of the tree at root in s.
func treeChunks(t *testing.T, s castore.Store, root castore.Entry) []castore.ChunkRef {
	t.Helper()
	ctx := context.Background()
	var out []castore.ChunkRef
	var walk func(e castore.Entry)
	walk = func(e castore.Entry) {
		switch e.Kind {
		case castore.KindFile:
			refs, err := castore.BlobChunks(ctx, s, e.Digest, e.Size)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, refs...)
		case castore.KindDirectory:
			dir, err := s.GetDirectory(ctx, e.Digest)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range dir.Entries() {
				walk(c)
			}
		}
	}
	walk(root)
	return out
}

// TestPushNeedsToken checks that a push the server refuses fails with the
// server's status code: here, a server asking for a token.
func TestPushNeedsToken(t *testing.T) {
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s), PushToken: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Stop()
	cache := new(castore.MemoryStore)
	res := ingestNode(t, cache, testtree.File(testtree.Random(9, 100_000)))
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {"wrong", codes.PermissionDenied}, {"secret", codes.OK}} {
		c, err := client.Dial(ln.Addr().String(), client.Options{Cache: cache, Token: tc.token})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PushTree(context.Background(), res.Root)
		c.Close()
		if status.Code(err) != tc.want {
			t.Errorf("push with token %q: %v, want %v", tc.token, err, tc.want)
		}
	}
}
