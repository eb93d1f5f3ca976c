package client_test

import (
	"context"
	"encoding/hex"
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
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// framedServer is a real gRPC server on loopback over a Pebble store that
// packs chunks into 64 KiB hot frames, so that a small tree spans many
// frames, with what the server was asked recorded.
type framedServer struct {
	addr  string
	dir   string
	store *pebblestore.Store
	reg   *prometheus.Registry
	asked *askedLog
}

// askedLog records the digests and frame names the server was asked for.
type askedLog struct {
	mu         sync.Mutex
	placesOf   map[castore.Digest]int // digest -> times asked in ChunkPlaces
	frames     []castore.Digest       // names asked in ReadFrames
	readChunks map[castore.Digest]int // digest -> times asked in ReadChunks
}

func (a *askedLog) note(m any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch m := m.(type) {
	case *nixcaspb.ChunkPlacesRequest:
		for _, b := range m.GetDigests() {
			d, _ := castore.DigestFromBytes(b)
			a.placesOf[d]++
		}
	case *nixcaspb.ReadFramesRequest:
		for _, b := range m.GetNames() {
			d, _ := castore.DigestFromBytes(b)
			a.frames = append(a.frames, d)
		}
	case *nixcaspb.ReadChunksRequest:
		for _, b := range m.GetDigests() {
			d, _ := castore.DigestFromBytes(b)
			a.readChunks[d]++
		}
	}
}

type recordingStream struct {
	grpc.ServerStream
	a *askedLog
}

func (s recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.a.note(m)
	}
	return err
}

func startFramedServer(t *testing.T, extra ...grpc.ServerOption) *framedServer {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "server")
	s, err := pebblestore.Open(dir, pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Size: 64 << 10, CacheSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	fs := &framedServer{dir: dir, store: s, reg: prometheus.NewRegistry(), asked: &askedLog{placesOf: map[castore.Digest]int{}, readChunks: map[castore.Digest]int{}}}
	record := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			fs.asked.note(req)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, recordingStream{ss, fs.asked})
		}),
	}
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s), Registerer: fs.reg}, append(record, extra...)...)
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
	fs.addr = ln.Addr().String()
	return fs
}

// calls returns how many calls of the SyncService method the server
// answered.
func (fs *framedServer) calls(t *testing.T, method string) uint64 {
	return grpcCalls(t, fs.reg, "SyncService/"+method)
}

// places counts the distinct chunks of refs the server keeps in frames
// and on their own.
func (fs *framedServer) places(t *testing.T, refs []castore.ChunkRef) (framed, inline int) {
	t.Helper()
	seen := map[castore.Digest]bool{}
	for _, r := range refs {
		if seen[r.Digest] {
			continue
		}
		seen[r.Digest] = true
		p, err := fs.store.ChunkPlace(context.Background(), r.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if p.Framed {
			framed++
		} else {
			inline++
		}
	}
	return framed, inline
}

// frameTree is a tree of about 1.9 MB: files of many chunks, compressible
// and not, small files, an empty one, an executable and a symlink.
func frameTree() *testtree.Node {
	return testtree.Dir(testtree.Entries{
		"bin":   testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Mixed(1, 900<<10))}),
		"empty": testtree.File(testtree.Empty()),
		"lib": testtree.Dir(testtree.Entries{
			"a.so":  testtree.File(testtree.Mixed(2, 300<<10)),
			"b.dat": testtree.File(testtree.Random(3, 150<<10)),
			"note":  testtree.File(testtree.Text("a small file")),
		}),
		"link":  testtree.Link("bin/tool"),
		"share": testtree.Dir(testtree.Entries{"doc": testtree.File(testtree.Mixed(4, 500<<10))}),
	})
}

// openCache opens a chunk cache as nixcas pull does (chunks inline).
func openCache(t *testing.T) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "cache"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pullWith(t *testing.T, addr string, o client.Options, root castore.Entry, dst string) (client.PullStats, error) {
	t.Helper()
	c, err := client.Dial(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.Pull(context.Background(), root, dst)
}

// checkPulled compares the tree at dst with the NAR ingested.
func checkPulled(t *testing.T, dst string, res narrender.Result) {
	t.Helper()
	if sum, size := narSum(t, dst); sum != res.NARSha256 || size != res.NARSize {
		t.Fatalf("the tree pulled to %s differs from the one stored (NAR of %d bytes, want %d)", dst, size, res.NARSize)
	}
}

// distinct returns the chunks of refs, each once, without the empty one
// (an empty file needs no chunk).
func distinct(refs []castore.ChunkRef) map[castore.Digest]castore.ChunkRef {
	out := map[castore.Digest]castore.ChunkRef{}
	for _, r := range refs {
		if r.Size > 0 {
			out[r.Digest] = r
		}
	}
	return out
}

// TestPullWholeFrames pulls a tree whose chunks are in hot frames but
// one, stored since and not yet packed (less than a frame's worth waits),
// and a tree whose chunks are all in cold frames after a compaction: byte
// for byte, every frame fetched whole, the chunk on its own by
// ReadChunks, nothing fetched twice.
func TestPullWholeFrames(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		compact bool
	}{
		{"hot frames and inline chunks", false},
		{"cold frames", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startFramedServer(t)
			tree := frameTree()
			res := ingestNode(t, ts.store, tree)
			if err := ts.store.PackPending(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.compact {
				if _, err := ts.store.Compact(ctx, pebblestore.CompactOptions{FrameSize: 256 << 10}); err != nil {
					t.Fatal(err)
				}
			} else {
				tree.Entries["lib"].Entries["new"] = testtree.File(testtree.Random(5, 20<<10))
				res = ingestNode(t, ts.store, tree)
			}
			refs := treeChunks(t, ts.store, res.Root)
			chunks := distinct(refs)
			framed, inline := ts.places(t, refs)
			t.Logf("%d chunks: %d in frames, %d on their own", len(chunks), framed, inline)
			if framed == 0 || tc.compact && inline != 0 || !tc.compact && inline != 1 {
				t.Fatalf("%d chunks in frames and %d on their own: not the case under test", framed, inline)
			}

			dst := filepath.Join(t.TempDir(), "out")
			st, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t)}, res.Root, dst)
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, dst, res)
			if st.ChunksFetched != uint64(len(chunks)) || st.ChunksFromCache != 0 {
				t.Errorf("stats %+v; want %d chunks fetched", st, len(chunks))
			}
			if n := ts.calls(t, "ReadFrames"); n == 0 {
				t.Error("no ReadFrames call")
			}
			// Every chunk asked for once, by ChunkPlaces; the chunks read
			// by ReadChunks are those on their own (in this tree every
			// frame is needed whole: nothing else was stored).
			for d := range chunks {
				if n := ts.asked.placesOf[d]; n != 1 {
					t.Fatalf("chunk %s located %d times", d, n)
				}
			}
			if len(ts.asked.readChunks) != inline {
				t.Errorf("%d chunks read one by one, want the %d on their own", len(ts.asked.readChunks), inline)
			}
			seen := map[castore.Digest]bool{}
			for _, f := range ts.asked.frames {
				if seen[f] {
					t.Errorf("frame %s read twice", f)
				}
				seen[f] = true
			}
		})
	}
}

// TestPullFramesPartlyCached: a client whose cache holds part of the tree
// already asks only about the chunks it lacks, reads only frames holding
// some of them, and receives fewer bytes than a client with an empty
// cache.
func TestPullFramesPartlyCached(t *testing.T) {
	ctx := context.Background()
	ts := startFramedServer(t)
	tree := frameTree()
	res := ingestNode(t, ts.store, tree)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	chunks := distinct(treeChunks(t, ts.store, res.Root))

	full, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t)}, res.Root, filepath.Join(t.TempDir(), "full"))
	if err != nil {
		t.Fatal(err)
	}

	// The second client holds the tool and the doc already.
	cache := openCache(t)
	ingestNode(t, cache, testtree.Dir(testtree.Entries{"bin": tree.Entries["bin"], "share": tree.Entries["share"]}))
	cached := map[castore.Digest]bool{}
	for d := range chunks {
		ok, err := cache.HasChunk(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		cached[d] = ok
	}
	framesBefore := len(ts.asked.frames)
	clear(ts.asked.placesOf)
	clear(ts.asked.readChunks)
	dst := filepath.Join(t.TempDir(), "out")
	st, err := pullWith(t, ts.addr, client.Options{Cache: cache}, res.Root, dst)
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, dst, res)
	var lacking int
	for d, ok := range cached {
		if !ok {
			lacking++
		}
		asked := ts.asked.placesOf[d] + ts.asked.readChunks[d]
		if ok && asked != 0 {
			t.Errorf("chunk %s, cached, asked for %d times", d, asked)
		}
		if !ok && ts.asked.placesOf[d] != 1 {
			t.Errorf("chunk %s, lacking, located %d times", d, ts.asked.placesOf[d])
		}
	}
	if lacking == 0 || lacking == len(chunks) {
		t.Fatalf("%d chunks of %d lacking: not the case under test", lacking, len(chunks))
	}
	if st.ChunksFetched != uint64(lacking) || st.ChunksFromCache != uint64(len(chunks)-lacking) {
		t.Errorf("stats %+v; want %d fetched, %d from the cache", st, lacking, len(chunks)-lacking)
	}
	// Every frame read holds a lacking chunk.
	holds := map[castore.Digest]bool{}
	for d, ok := range cached {
		if !ok {
			if fc, err := ts.store.ChunkPlace(ctx, d); err != nil {
				t.Fatal(err)
			} else if fc.Framed {
				holds[fc.Frame] = true
			}
		}
	}
	for _, f := range ts.asked.frames[framesBefore:] {
		if !holds[f] {
			t.Errorf("frame %s read, which holds no lacking chunk", f)
		}
	}
	t.Logf("empty cache: %+v; partly cached: %+v", full, st)
	if st.BytesReceived >= full.BytesReceived {
		t.Errorf("received %d bytes with part of the tree cached, %d without", st.BytesReceived, full.BytesReceived)
	}
}

// corruptFrames flips a byte in the middle of every frame file of the
// store in dir and returns the frames' names.
func corruptFrames(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 0x40
		names = append(names, d.Name())
		return os.WriteFile(p, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no frame files")
	}
	return names
}

// checkNothingWritten: a failed pull leaves neither dst nor a temporary
// tree beside it.
func checkNothingWritten(t *testing.T, dst string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(dst))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("a failed pull left %s", filepath.Join(filepath.Dir(dst), e.Name()))
	}
}

// TestPullCorruptFrame: frames damaged on the server's disk end the pull
// with DATA_LOSS naming the frame (the server checks a frame against its
// name before sending it), and frames damaged on the way, or sent in
// messages that do not decode, are refused by the client with ErrCorrupt,
// naming the frame; nothing is written either way.
func TestPullCorruptFrame(t *testing.T) {
	ctx := context.Background()
	t.Run("on the server's disk", func(t *testing.T) {
		ts := startFramedServer(t)
		res := ingestNode(t, ts.store, frameTree())
		if err := ts.store.PackPending(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ts.store.Compact(ctx, pebblestore.CompactOptions{FrameSize: 256 << 10}); err != nil {
			t.Fatal(err)
		}
		names := corruptFrames(t, ts.dir)
		dst := filepath.Join(t.TempDir(), "out")
		_, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t)}, res.Root, dst)
		if status.Code(err) != codes.DataLoss {
			t.Fatalf("pull from damaged frames: %v; want DATA_LOSS", err)
		}
		named := false
		for _, n := range names {
			named = named || strings.Contains(err.Error(), "frame "+n)
		}
		if !named {
			t.Errorf("error %q names no frame of %v", err, names)
		}
		checkNothingWritten(t, dst)
	})
	t.Run("on the way", func(t *testing.T) {
		damage := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, damagingStream{ss})
		})
		ts := startFramedServer(t, damage)
		res := ingestNode(t, ts.store, frameTree())
		if err := ts.store.PackPending(ctx); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "out")
		cache := openCache(t)
		_, err := pullWith(t, ts.addr, client.Options{Cache: cache}, res.Root, dst)
		if !errors.Is(err, castore.ErrCorrupt) || !strings.Contains(err.Error(), "frame ") {
			t.Fatalf("pull of frames damaged on the way: %v; want ErrCorrupt naming the frame", err)
		}
		checkNothingWritten(t, dst)
		// Nothing of a damaged frame reaches the cache.
		if st := checkCacheCounters(t, cache); st.Chunks != 0 || st.Frames != 0 {
			t.Errorf("the cache after the refused frames: %+v", st)
		}
		if files := frameFilesIn(t, cache.Dir()); len(files) != 0 {
			t.Errorf("the cache holds %d frame files after the refused frames", len(files))
		}
	})
	t.Run("malformed message", func(t *testing.T) {
		malform := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, malformingStream{ss})
		})
		ts := startFramedServer(t, malform)
		res := ingestNode(t, ts.store, frameTree())
		if err := ts.store.PackPending(ctx); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "out")
		_, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t)}, res.Root, dst)
		if !errors.Is(err, castore.ErrCorrupt) || !strings.Contains(err.Error(), "frame ") {
			t.Fatalf("pull of malformed frame messages: %v; want ErrCorrupt naming the frame", err)
		}
		checkNothingWritten(t, dst)
	})
}

// sentResponse returns the ReadFramesResponse m stands for when it is
// the server's own type of ReadFrames message, else m.
func sentResponse(m any) any {
	if fm, ok := m.(interface {
		Response() *nixcaspb.ReadFramesResponse
	}); ok {
		return fm.Response()
	}
	return m
}

// malformingStream adds a second data field to every frame message the
// server sends, which the client's codec refuses.
type malformingStream struct{ grpc.ServerStream }

func (s malformingStream) SendMsg(m any) error {
	m = sentResponse(m)
	if r, ok := m.(*nixcaspb.ReadFramesResponse); ok && len(r.GetData()) > 0 {
		r = &nixcaspb.ReadFramesResponse{Frame: r.GetFrame(), Data: r.GetData()}
		second := protowire.AppendTag(nil, 2, protowire.BytesType)
		r.ProtoReflect().SetUnknown(protowire.AppendBytes(second, []byte("more")))
		m = r
	}
	return s.ServerStream.SendMsg(m)
}

// damagingStream flips a byte of every frame message the server sends.
type damagingStream struct{ grpc.ServerStream }

func (s damagingStream) SendMsg(m any) error {
	m = sentResponse(m)
	if r, ok := m.(*nixcaspb.ReadFramesResponse); ok && len(r.GetData()) > 0 {
		data := append([]byte(nil), r.GetData()...)
		data[len(data)/2] ^= 1
		r = &nixcaspb.ReadFramesResponse{Frame: r.GetFrame(), Data: data}
		m = r
	}
	return s.ServerStream.SendMsg(m)
}

// TestPullFramesFallback: against a server without the frame calls
// (UNIMPLEMENTED, as before them), one whose frames are gone by the time
// they are read (NOT_FOUND: compaction or collection retired them), and
// with frames turned off, a pull reads every chunk with ReadChunks and
// writes the same tree.
func TestPullFramesFallback(t *testing.T) {
	ctx := context.Background()
	refuse := func(code codes.Code, methods ...string) grpc.ServerOption {
		is := func(full string) bool {
			for _, m := range methods {
				if strings.HasSuffix(full, "/"+m) {
					return true
				}
			}
			return false
		}
		return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if is(info.FullMethod) {
				return status.Error(code, "refused by the test")
			}
			return h(srv, ss)
		})
	}
	unary := func(code codes.Code, method string) grpc.ServerOption {
		return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if strings.HasSuffix(info.FullMethod, "/"+method) {
				return nil, status.Error(code, "unknown method")
			}
			return h(ctx, req)
		})
	}
	for _, tc := range []struct {
		name     string
		server   []grpc.ServerOption
		noFrames bool
		located  bool // ChunkPlaces asked
		frames   bool // ReadFrames asked
	}{
		{"older server", []grpc.ServerOption{unary(codes.Unimplemented, "ChunkPlaces"), refuse(codes.Unimplemented, "ReadFrames")}, false, true, false},
		{"frames retired", []grpc.ServerOption{refuse(codes.NotFound, "ReadFrames")}, false, true, true},
		{"frames off", nil, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startFramedServer(t, tc.server...)
			res := ingestNode(t, ts.store, frameTree())
			if err := ts.store.PackPending(ctx); err != nil {
				t.Fatal(err)
			}
			chunks := distinct(treeChunks(t, ts.store, res.Root))
			dst := filepath.Join(t.TempDir(), "out")
			st, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t), NoFrames: tc.noFrames}, res.Root, dst)
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, dst, res)
			if st.ChunksFetched != uint64(len(chunks)) || len(ts.asked.readChunks) != len(chunks) {
				t.Errorf("stats %+v, %d chunks read one by one; want all %d", st, len(ts.asked.readChunks), len(chunks))
			}
			if located, frames := len(ts.asked.placesOf) > 0, ts.calls(t, "ReadFrames") > 0; located != tc.located || frames != tc.frames {
				t.Errorf("ChunkPlaces asked: %v, ReadFrames asked: %v; want %v, %v", located, frames, tc.located, tc.frames)
			}
		})
	}
}

// TestPullWriterFails: a file that does not hash to its digest (the
// server swapped two chunks of its chunk list) ends the pull with
// ErrCorrupt naming the file while frames of the files after it are
// still arriving and being imported; nothing is left at the
// destination or beside it, and the cache stays consistent.
func TestPullWriterFails(t *testing.T) {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		swapped []string // hex digests of the blobs whose chunks came swapped
	)
	swap := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if r, ok := resp.(*nixcaspb.StatBlobsResponse); ok {
			for _, b := range r.GetBlobs() {
				if cs := b.GetChunks(); len(cs) > 1 && string(cs[0].GetDigest()) != string(cs[1].GetDigest()) {
					cs[0], cs[1] = cs[1], cs[0]
					mu.Lock()
					swapped = append(swapped, hex.EncodeToString(b.GetDigest()))
					mu.Unlock()
				}
			}
		}
		return resp, err
	})
	ts := startFramedServer(t, swap)
	tree := frameTree()
	many := testtree.Entries{}
	for i := range 300 {
		many[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Mixed(uint64(100+i), 20<<10))
	}
	tree.Entries["zz-many"] = testtree.Dir(many)
	res := ingestNode(t, ts.store, tree)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	client.SetHeldLimits(t, 256<<10, 64<<10) // imports all along the pull
	dst := filepath.Join(t.TempDir(), "out")
	cache := openCache(t)
	_, err := pullWith(t, ts.addr, client.Options{Cache: cache}, res.Root, dst)
	if !errors.Is(err, castore.ErrCorrupt) {
		t.Fatalf("pull of files whose chunks come swapped: %v; want ErrCorrupt", err)
	}
	// Several files have their chunks swapped; whichever a writer finishes
	// first is the one reported.
	mu.Lock()
	named := slices.ContainsFunc(swapped, func(d string) bool { return strings.Contains(err.Error(), d) })
	mu.Unlock()
	if !named {
		t.Fatalf("pull of files whose chunks come swapped: %v; want the digest of one of them (%v)", err, swapped)
	}
	checkNothingWritten(t, dst)
	checkCacheCounters(t, cache)
}

// TestPullWritesInArrivalOrder: a pull writes files in the order their
// frames come, not the tree's, so that a frame leaves memory once its
// chunks are written. The server's frames each hold files from both
// halves of the tree (as a push of several streams interleaves them): in
// the tree's order every frame would wait for the second half, past the
// budget, and be dropped before its chunks were written.
func TestPullWritesInArrivalOrder(t *testing.T) {
	ctx := context.Background()
	ts := startFramedServer(t) // 64 KiB frames
	const files = 64
	entries := testtree.Entries{}
	for i := range files {
		entries[fmt.Sprintf("f%02d", i)] = testtree.File(testtree.Random(uint64(100+i), 16<<10)) // one chunk each
	}
	tree := testtree.Dir(entries)
	// The chunks stored interleaved: f00, f32, f01, f33, ...
	for i := range files / 2 {
		for _, k := range []int{i, i + files/2} {
			data, err := io.ReadAll(testtree.Random(uint64(100+k), 16<<10).Open())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ts.store.PutChunk(ctx, castore.NewChunk(data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	res := ingestNode(t, ts.store, tree)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	refs := treeChunks(t, ts.store, res.Root)
	if framed, inline := ts.places(t, refs); framed != files || inline != 0 {
		t.Fatalf("%d chunks in frames and %d on their own, want all %d in frames", framed, inline, files)
	}

	const budget = 128 << 10 // two frames
	client.SetHeldLimits(t, budget, 64<<10)
	var peak int64
	dropped := -1
	client.SetHeldDone(t, func(p int64, d int) { peak, dropped = p, d })
	dst := filepath.Join(t.TempDir(), "out")
	if _, err := pullWith(t, ts.addr, client.Options{Cache: openCache(t)}, res.Root, dst); err != nil {
		t.Fatal(err)
	}
	checkPulled(t, dst, res)
	t.Logf("held at most %d bytes, %d frames dropped before their chunks were written", peak, dropped)
	if dropped != 0 {
		t.Errorf("%d frames dropped before their chunks were written, want none", dropped)
	}
	if peak > files*16<<10/2 {
		t.Errorf("%d bytes of frames held at once, more than half the tree", peak)
	}
}
