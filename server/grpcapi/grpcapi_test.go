package grpcapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// testServer is a server on a loopback listener with a client connection.
type testServer struct {
	store *pebblestore.Store
	index *store.Index
	reg   *prometheus.Registry
	conn  *grpc.ClientConn
	blobs castorepb.BlobServiceClient
	dirs  castorepb.DirectoryServiceClient
	paths storepb.PathInfoServiceClient
	sync  nixcaspb.SyncServiceClient
}

func startServer(t *testing.T, o grpcapi.Options) *testServer {
	t.Helper()
	// 1 MiB frames: the frame tests fill several with a few MiB.
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Size: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{store: s, index: store.NewIndex(s, s), reg: prometheus.NewRegistry()}
	o.CAS, o.Index, o.Registerer = s, ts.index, ts.reg
	srv, err := grpcapi.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	ts.conn, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.conn.Close()
		srv.Stop()
		s.Close()
	})
	ts.blobs = castorepb.NewBlobServiceClient(ts.conn)
	ts.dirs = castorepb.NewDirectoryServiceClient(ts.conn)
	ts.paths = storepb.NewPathInfoServiceClient(ts.conn)
	ts.sync = nixcaspb.NewSyncServiceClient(ts.conn)
	return ts
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

func putBlob(t *testing.T, ts *testServer, data []byte) castore.Digest {
	t.Helper()
	stream, err := ts.blobs.Put(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(len(data), 100<<10)
		if err := stream.Send(&castorepb.BlobChunk{Data: data[:n]}); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("BlobService.Put: %v", err)
	}
	d, err := castore.DigestFromBytes(resp.GetDigest())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readBlob(t *testing.T, ts *testServer, d castore.Digest) []byte {
	t.Helper()
	stream, err := ts.blobs.Read(context.Background(), &castorepb.ReadBlobRequest{Digest: d[:]})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("BlobService.Read: %v", err)
		}
		out = append(out, msg.GetData()...)
	}
}

func TestBlobService(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	big := castoretest.RandomBytes(1, 1<<20+12345)
	d := putBlob(t, ts, big)
	if d != castore.Hash(big) {
		t.Fatalf("Put returned %s, want %s", d, castore.Hash(big))
	}
	st, err := ts.blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: d[:], SendChunks: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetChunks()) < 2 {
		t.Fatalf("Stat of a 1 MiB blob lists %d chunks", len(st.GetChunks()))
	}
	var joined []byte
	for _, c := range st.GetChunks() {
		cd, _ := castore.DigestFromBytes(c.GetDigest())
		chunk := readBlob(t, ts, cd)
		if uint64(len(chunk)) != c.GetSize() || castore.Hash(chunk) != cd {
			t.Fatalf("chunk %s read back wrong", cd)
		}
		joined = append(joined, chunk...)
	}
	if !bytes.Equal(joined, big) {
		t.Fatal("chunks listed by Stat do not join to the blob")
	}
	if got := readBlob(t, ts, d); !bytes.Equal(got, big) {
		t.Fatal("Read returned other bytes")
	}

	small := putBlob(t, ts, []byte("small"))
	if st, err := ts.blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: small[:], SendChunks: true}); err != nil || len(st.GetChunks()) != 0 {
		t.Errorf("Stat of a one-chunk blob: %v, %v; want no chunks", st, err)
	}
	empty := putBlob(t, ts, nil)
	if empty != castore.EmptyDigest || len(readBlob(t, ts, empty)) != 0 {
		t.Errorf("empty blob: %s", empty)
	}

	missing := castore.Hash([]byte("missing"))
	_, err = ts.blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: missing[:]})
	wantCode(t, "Stat of a missing blob", err, codes.NotFound)
	stream, _ := ts.blobs.Read(ctx, &castorepb.ReadBlobRequest{Digest: missing[:]})
	_, err = stream.Recv()
	wantCode(t, "Read of a missing blob", err, codes.NotFound)
	_, err = ts.blobs.Stat(ctx, &castorepb.StatBlobRequest{Digest: []byte("short")})
	wantCode(t, "Stat of a short digest", err, codes.InvalidArgument)

	// The same service answers under its tvix name.
	var resp castorepb.StatBlobResponse
	if err := ts.conn.Invoke(ctx, "/tvix.castore.v1.BlobService/Stat", &castorepb.StatBlobRequest{Digest: d[:], SendChunks: true}, &resp); err != nil {
		t.Fatalf("tvix.castore.v1.BlobService/Stat: %v", err)
	}
	if len(resp.GetChunks()) != len(st.GetChunks()) {
		t.Errorf("tvix Stat lists %d chunks, snix %d", len(resp.GetChunks()), len(st.GetChunks()))
	}
}

// dirs builds test directories: a leaf with a file, a middle directory
// holding the leaf twice, and a root holding the middle one.
func sampleDirs() (leaf, middle, root *castore.Directory) {
	leaf = &castore.Directory{Files: []castore.FileEntry{{Name: "f", Digest: castore.Hash([]byte("f")), Size: 1}}}
	middle = &castore.Directory{Directories: []castore.DirectoryEntry{
		{Name: "a", Digest: leaf.Digest(), Size: leaf.Size()},
		{Name: "b", Digest: leaf.Digest(), Size: leaf.Size()},
	}}
	root = &castore.Directory{
		Directories: []castore.DirectoryEntry{{Name: "m", Digest: middle.Digest(), Size: middle.Size()}},
		Symlinks:    []castore.SymlinkEntry{{Name: "s", Target: "m/a/f"}},
	}
	return leaf, middle, root
}

func putDirs(ts *testServer, dirs ...*castorepb.Directory) (*castorepb.PutDirectoryResponse, error) {
	stream, err := ts.dirs.Put(context.Background())
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if err := stream.Send(d); err != nil {
			break // the server ended the call; CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

func TestDirectoryService(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	leaf, middle, root := sampleDirs()
	p := castore.DirectoryToProto

	badName := &castorepb.Directory{Files: []*castorepb.FileEntry{{Name: []byte("a/b"), Digest: make([]byte, 32), Size: 1}}}
	wrongSize := castore.DirectoryToProto(middle)
	wrongSize.Directories[0].Size = 7
	unsorted := castore.DirectoryToProto(middle)
	unsorted.Directories[0].Name, unsorted.Directories[1].Name = []byte("b"), []byte("a")
	stray := &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "x", Target: "y"}}}
	for _, tc := range []struct {
		name string
		dirs []*castorepb.Directory
		want codes.Code
	}{
		{"dangling reference", []*castorepb.Directory{p(middle), p(root)}, codes.FailedPrecondition},
		{"root first", []*castorepb.Directory{p(root), p(middle), p(leaf)}, codes.FailedPrecondition},
		{"unconnected", []*castorepb.Directory{p(stray), p(leaf), p(middle), p(root)}, codes.InvalidArgument},
		{"wrong size", []*castorepb.Directory{p(leaf), wrongSize}, codes.InvalidArgument},
		{"invalid name", []*castorepb.Directory{badName}, codes.InvalidArgument},
		{"unsorted", []*castorepb.Directory{p(leaf), unsorted}, codes.InvalidArgument},
		{"duplicate name", []*castorepb.Directory{p(leaf), {Directories: []*castorepb.DirectoryEntry{{Name: []byte("a"), Digest: raw(leaf.Digest()), Size: 1}}, Files: []*castorepb.FileEntry{{Name: []byte("a"), Digest: make([]byte, 32)}}}}, codes.InvalidArgument},
		{"short digest", []*castorepb.Directory{{Files: []*castorepb.FileEntry{{Name: []byte("a"), Digest: []byte{1}}}}}, codes.InvalidArgument},
		{"empty stream", nil, codes.InvalidArgument},
	} {
		_, err := putDirs(ts, tc.dirs...)
		wantCode(t, tc.name, err, tc.want)
		if st := castoretest.MustStats(t, ts.store); st.Directories != 0 {
			t.Fatalf("%s: refused stream stored %d directories", tc.name, st.Directories)
		}
	}

	resp, err := putDirs(ts, p(leaf), p(middle), p(root))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetRootDigest()) != string(raw(root.Digest())) {
		t.Fatalf("Put returned root %x", resp.GetRootDigest())
	}
	// A stream may name directories already stored.
	top := &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "r", Digest: root.Digest(), Size: root.Size()}}}
	if _, err := putDirs(ts, p(top)); err != nil {
		t.Fatalf("Put naming a stored directory: %v", err)
	}

	// Recursive Get: breadth first, root first, each once, each after a
	// directory naming it.
	stream, err := ts.dirs.Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: raw(top.Digest())}, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []castore.Digest
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		d, err := castore.DirectoryFromProto(msg)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.Digest())
	}
	want := []castore.Digest{top.Digest(), root.Digest(), middle.Digest(), leaf.Digest()}
	if len(got) != len(want) {
		t.Fatalf("recursive Get sent %d directories, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("recursive Get: directory %d is %s, want %s", i, got[i], want[i])
		}
	}
	stream, _ = ts.dirs.Get(ctx, &castorepb.GetDirectoryRequest{ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: raw(stray.Digest())}})
	_, err = stream.Recv()
	wantCode(t, "Get of a missing directory", err, codes.NotFound)
}

// narOf returns a NAR of one regular file.
func narOf(contents string) []byte {
	var nar []byte
	for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents", contents, ")"} {
		var n [8]byte
		for i := range 8 {
			n[i] = byte(uint64(len(tok)) >> (8 * i))
		}
		nar = append(append(nar, n[:]...), tok...)
		nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
	}
	return nar
}

const (
	pathA = "0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"
	pathB = "0dxzkflshz3w8ac8bc2p0v3xfbi1szmd-glibc-2.38"
)

func TestPathInfoService(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	nar := narOf("hello")
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar), ts.store, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := res.Root
	root.Name = pathA
	good := &store.PathInfo{Path: pathA, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256, References: []string{pathA, pathB}}

	// Refused: a NAR hash or size the tree does not have, a tree not
	// stored, a bad store path, references not matching their digests.
	wrongHash := *good
	wrongHash.NARSha256[0] ^= 1
	wrongSize := *good
	wrongSize.NARSize++
	missing := *good
	missing.Root.Digest = castore.Hash([]byte("absent"))
	for _, tc := range []struct {
		name string
		pb   *storepb.PathInfo
		want codes.Code
	}{
		{"wrong NAR hash", wrongHash.ToProto(), codes.InvalidArgument},
		{"wrong NAR size", wrongSize.ToProto(), codes.InvalidArgument},
		{"tree missing", missing.ToProto(), codes.FailedPrecondition},
		{"bad store path", func() *storepb.PathInfo {
			pb := good.ToProto()
			pb.Entry.GetFile().Name = []byte("not-a-store-path")
			return pb
		}(), codes.InvalidArgument},
		{"reference digest mismatch", func() *storepb.PathInfo {
			pb := good.ToProto()
			pb.References[0] = make([]byte, 20)
			return pb
		}(), codes.InvalidArgument},
		{"no entry", &storepb.PathInfo{}, codes.InvalidArgument},
	} {
		_, err := ts.paths.Put(ctx, tc.pb)
		wantCode(t, tc.name, err, tc.want)
	}
	d := good.Digest()
	_, err = ts.paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}})
	wantCode(t, "Get after refused puts", err, codes.NotFound)

	if _, err := ts.paths.Put(ctx, good.ToProto()); err != nil {
		t.Fatalf("Put: %v", err)
	}
	pb, err := ts.paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.PathInfoFromProto(pb)
	if err != nil || got.Fingerprint() != good.Fingerprint() {
		t.Fatalf("Get: %+v, %v", got, err)
	}
	_, err = ts.paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: []byte{1}}})
	wantCode(t, "Get by a short hash", err, codes.InvalidArgument)

	calc, err := ts.paths.CalculateNAR(ctx, castore.EntryToProto(res.Root))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(nar); calc.GetNarSize() != uint64(len(nar)) || string(calc.GetNarSha256()) != string(sum[:]) {
		t.Errorf("CalculateNAR = %d, %x; want %d, %x", calc.GetNarSize(), calc.GetNarSha256(), len(nar), sum)
	}

	list, err := ts.paths.List(ctx, &storepb.ListPathInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := list.Recv(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 1 {
		t.Errorf("List sent %d path infos, want 1", n)
	}

	// tvix.store.v1 names the same service; its PathInfo has the same bytes.
	var tvix storepb.PathInfo
	if err := ts.conn.Invoke(ctx, "/tvix.store.v1.PathInfoService/Get", &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}}, &tvix); err != nil {
		t.Fatalf("tvix.store.v1.PathInfoService/Get: %v", err)
	}
}

func TestSyncService(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	var enc castore.ChunkEncoder
	parts := [][]byte{castoretest.RandomBytes(1, 70<<10), castoretest.CompressibleBytes(90 << 10), castoretest.RandomBytes(2, 10)}
	var chunks []*nixcaspb.Chunk
	var refs []*nixcaspb.ChunkMeta
	var whole []byte
	for _, p := range parts {
		d := castore.Hash(p)
		chunks = append(chunks, &nixcaspb.Chunk{Digest: raw(d), Data: enc.Encode(nil, p)})
		refs = append(refs, &nixcaspb.ChunkMeta{Digest: raw(d), Size: uint32(len(p))})
		whole = append(whole, p...)
	}
	blob := castore.Hash(whole)

	missing, err := ts.sync.Missing(ctx, &nixcaspb.MissingRequest{
		Chunks: [][]byte{chunks[0].Digest, chunks[1].Digest, chunks[2].Digest},
		Blobs:  [][]byte{raw(blob)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing.GetChunks()) != 3 || len(missing.GetBlobs()) != 1 {
		t.Fatalf("Missing on an empty store: %v", missing)
	}

	// A blob list naming chunks not stored is refused.
	_, err = ts.sync.PutBlobs(ctx, &nixcaspb.PutBlobsRequest{Blobs: []*nixcaspb.Blob{{Digest: raw(blob), Chunks: refs}}})
	wantCode(t, "PutBlobs before the chunks", err, codes.FailedPrecondition)

	// A chunk whose bytes are not its digest's: DATA_LOSS, not stored.
	bad := &nixcaspb.Chunk{Digest: chunks[0].Digest, Data: enc.Encode(nil, parts[1])}
	for _, msg := range [][]*nixcaspb.Chunk{{bad}, {chunks[2], bad}} {
		stream, err := ts.sync.PutChunks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&nixcaspb.PutChunksRequest{Chunks: msg})
		_, err = stream.CloseAndRecv()
		wantCode(t, "PutChunks of a corrupt chunk", err, codes.DataLoss)
		castoretest.MustHaveChunk(t, ts.store, castore.Digest(chunks[0].Digest), false)
	}
	stream, _ := ts.sync.PutChunks(ctx)
	stream.Send(&nixcaspb.PutChunksRequest{Chunks: []*nixcaspb.Chunk{{Digest: []byte{1, 2}, Data: []byte{0}}}})
	_, err = stream.CloseAndRecv()
	wantCode(t, "PutChunks with a short digest", err, codes.InvalidArgument)

	stream, err = ts.sync.PutChunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&nixcaspb.PutChunksRequest{Chunks: chunks}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&nixcaspb.PutChunksRequest{Chunks: chunks[:1]}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	// chunks[2] may have been stored by the refused call before it.
	if resp.GetChunksAdded()+resp.GetChunksPresent() != 4 || resp.GetChunksPresent() < 1 {
		t.Errorf("PutChunks: %v", resp)
	}

	// A list whose chunks do not hash to the blob: DATA_LOSS.
	swapped := []*nixcaspb.ChunkMeta{refs[1], refs[0], refs[2]}
	_, err = ts.sync.PutBlobs(ctx, &nixcaspb.PutBlobsRequest{Blobs: []*nixcaspb.Blob{{Digest: raw(blob), Chunks: swapped}}})
	wantCode(t, "PutBlobs with chunks out of order", err, codes.DataLoss)
	_, err = ts.sync.StatBlobs(ctx, &nixcaspb.StatBlobsRequest{Digests: [][]byte{raw(blob)}})
	wantCode(t, "StatBlobs of a refused blob", err, codes.NotFound)

	put, err := ts.sync.PutBlobs(ctx, &nixcaspb.PutBlobsRequest{Blobs: []*nixcaspb.Blob{{Digest: raw(blob), Chunks: refs}}})
	if err != nil || put.GetBlobsAdded() != 1 {
		t.Fatalf("PutBlobs: %v, %v", put, err)
	}
	if got := readBlob(t, ts, blob); !bytes.Equal(got, whole) {
		t.Fatal("blob put as a chunk list reads back wrong")
	}
	stat, err := ts.sync.StatBlobs(ctx, &nixcaspb.StatBlobsRequest{Digests: [][]byte{raw(blob), chunks[2].Digest}})
	if err != nil {
		t.Fatal(err)
	}
	if len(stat.GetBlobs()) != 2 || len(stat.GetBlobs()[0].GetChunks()) != 3 || len(stat.GetBlobs()[1].GetChunks()) != 0 {
		t.Errorf("StatBlobs: %v", stat)
	}
	missing, err = ts.sync.Missing(ctx, &nixcaspb.MissingRequest{
		Chunks:      [][]byte{chunks[0].Digest, raw(castore.Hash(nil))},
		Blobs:       [][]byte{raw(blob)},
		Directories: [][]byte{raw(castore.Hash(nil))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(missing.GetChunks()) != 1 || missing.GetChunks()[0] != 1 || len(missing.GetBlobs()) != 0 || len(missing.GetDirectories()) != 1 {
		t.Errorf("Missing after the puts: %v", missing)
	}

	// ReadChunks streams the stored forms, in order.
	order := [][]byte{chunks[2].Digest, chunks[0].Digest, chunks[1].Digest, chunks[0].Digest}
	rs, err := ts.sync.ReadChunks(ctx, &nixcaspb.ReadChunksRequest{Digests: order})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for {
		msg, err := rs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range msg.GetChunks() {
			data, err := castore.DecodeChunk(nil, c.GetData())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := castore.VerifyChunk(castore.Digest(c.GetDigest()), data); err != nil {
				t.Fatal(err)
			}
			got = append(got, c.GetDigest())
		}
	}
	if len(got) != len(order) {
		t.Fatalf("ReadChunks sent %d chunks, want %d", len(got), len(order))
	}
	for i := range order {
		if !bytes.Equal(got[i], order[i]) {
			t.Errorf("ReadChunks: chunk %d is %x, want %x", i, got[i], order[i])
		}
	}
	rs, _ = ts.sync.ReadChunks(ctx, &nixcaspb.ReadChunksRequest{Digests: [][]byte{raw(castore.Hash([]byte("absent")))}})
	_, err = rs.Recv()
	wantCode(t, "ReadChunks of a missing chunk", err, codes.NotFound)
	_, err = ts.sync.Missing(ctx, &nixcaspb.MissingRequest{Chunks: make([][]byte, grpcapi.MaxBatch+1)})
	wantCode(t, "Missing with too many digests", err, codes.InvalidArgument)
}

func TestAuth(t *testing.T) {
	const push, read = "push-secret", "read-secret"
	with := func(token string) context.Context {
		ctx := context.Background()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		return ctx
	}
	d := castore.Hash([]byte("x"))
	write := func(ts *testServer, ctx context.Context) error {
		_, err := ts.sync.PutBlobs(ctx, &nixcaspb.PutBlobsRequest{})
		return err
	}
	readCall := func(ts *testServer, ctx context.Context) error {
		_, err := ts.sync.Missing(ctx, &nixcaspb.MissingRequest{Chunks: [][]byte{d[:]}})
		return err
	}
	ts := startServer(t, grpcapi.Options{PushToken: push})
	wantCode(t, "write without a token", write(ts, with("")), codes.Unauthenticated)
	wantCode(t, "write with a wrong token", write(ts, with("wrong")), codes.PermissionDenied)
	wantCode(t, "write with the push token", write(ts, with(push)), codes.OK)
	wantCode(t, "read without a token", readCall(ts, with("")), codes.OK)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Basic x")
	wantCode(t, "write with a basic authorization", write(ts, ctx), codes.Unauthenticated)
	// Streams are checked too.
	stream, _ := ts.dirs.Put(with("wrong"))
	_, err := stream.CloseAndRecv()
	wantCode(t, "directory put with a wrong token", err, codes.PermissionDenied)

	ts = startServer(t, grpcapi.Options{PushToken: push, ReadToken: read})
	wantCode(t, "read without a token", readCall(ts, with("")), codes.Unauthenticated)
	wantCode(t, "read with a wrong token", readCall(ts, with("wrong")), codes.PermissionDenied)
	wantCode(t, "read with the read token", readCall(ts, with(read)), codes.OK)
	wantCode(t, "read with the push token", readCall(ts, with(push)), codes.OK)
	wantCode(t, "write with the read token", write(ts, with(read)), codes.PermissionDenied)
	rs, _ := ts.sync.ReadChunks(with(""), &nixcaspb.ReadChunksRequest{})
	_, err = rs.Recv()
	wantCode(t, "stream read without a token", err, codes.Unauthenticated)

	// A read token alone guards reads and refuses every write.
	ts = startServer(t, grpcapi.Options{ReadToken: read})
	wantCode(t, "read-only server: read with the read token", readCall(ts, with(read)), codes.OK)
	wantCode(t, "read-only server: write without a token", write(ts, with("")), codes.PermissionDenied)
	wantCode(t, "read-only server: write with the read token", write(ts, with(read)), codes.PermissionDenied)
	// Anonymous writes refused: reads stay open.
	ts = startServer(t, grpcapi.Options{RefuseAnonymousWrites: true})
	wantCode(t, "anonymous writes refused: read", readCall(ts, with("")), codes.OK)
	wantCode(t, "anonymous writes refused: write", write(ts, with("")), codes.PermissionDenied)
}

// TestAuthMessages: the status messages say what was wrong.
func TestAuthMessages(t *testing.T) {
	ts := startServer(t, grpcapi.Options{PushToken: "push-secret", ReadToken: "read-secret"})
	for _, tc := range []struct{ token, want string }{
		{"", "token required"},
		{"nope", "wrong token"},
		{"read-secret", "wrong token: the read token does not allow writes"},
	} {
		ctx := context.Background()
		if tc.token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
		}
		_, err := ts.sync.PutBlobs(ctx, &nixcaspb.PutBlobsRequest{})
		if got := status.Convert(err).Message(); got != tc.want {
			t.Errorf("PutBlobs with token %q: message %q, want %q", tc.token, got, tc.want)
		}
	}
	ts = startServer(t, grpcapi.Options{ReadToken: "read-secret"})
	_, err := ts.sync.PutBlobs(context.Background(), &nixcaspb.PutBlobsRequest{})
	if got, want := status.Convert(err).Message(), "uploads are disabled: no push token is set, and a read token is"; got != want {
		t.Errorf("PutBlobs on a read-only server: %q, want %q", got, want)
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	putBlob(t, ts, castoretest.RandomBytes(3, 300<<10))
	putBlob(t, ts, castoretest.RandomBytes(3, 300<<10))
	families, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			got[f.GetName()] += v
		}
	}
	for _, name := range []string{"nixcas_grpc_request_duration_seconds", "nixcas_grpc_received_bytes_total", "nixcas_grpc_sent_bytes_total", "nixcas_chunks_stored_total", "nixcas_chunks_deduplicated_total"} {
		if got[name] == 0 {
			t.Errorf("metric %s is zero or missing (have %v)", name, got)
		}
	}
	if got["nixcas_grpc_received_bytes_total"] < 600<<10 {
		t.Errorf("received bytes %v, want at least the two blobs", got["nixcas_grpc_received_bytes_total"])
	}
	if got["nixcas_chunks_deduplicated_total"] != got["nixcas_chunks_stored_total"] {
		t.Errorf("the second put of the same blob deduplicated %v chunks, the first stored %v", got["nixcas_chunks_deduplicated_total"], got["nixcas_chunks_stored_total"])
	}
}

// raw returns a digest as the bytes of a protobuf field.
func raw(d castore.Digest) []byte { return d[:] }
