package grpcapi_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// counterValue returns the value of the counter name in reg (0 when it has
// not been set).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// putChunks stores each of datas as a chunk over PutChunks and returns
// their references.
func putChunks(t *testing.T, ts *testServer, datas ...[]byte) []castore.ChunkRef {
	t.Helper()
	stream, err := ts.sync.PutChunks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var (
		enc  castore.ChunkEncoder
		refs []castore.ChunkRef
	)
	for _, d := range datas {
		ref := castore.ChunkRef{Digest: castore.Hash(d), Size: uint32(len(d))}
		refs = append(refs, ref)
		if err := stream.Send(&nixcaspb.PutChunksRequest{Chunks: []*nixcaspb.Chunk{{Digest: ref.Digest[:], Data: enc.Encode(nil, d)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	return refs
}

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func blobMsg(d castore.Digest, refs ...castore.ChunkRef) *nixcaspb.Blob {
	b := &nixcaspb.Blob{Digest: d[:]}
	for _, r := range refs {
		b.Chunks = append(b.Chunks, &nixcaspb.ChunkMeta{Digest: r.Digest[:], Size: r.Size})
	}
	return b
}

// TestPutBlobsBudget sends PutBlobs requests that would make the server
// hash far more than they carry: they are refused before any chunk is
// read. Requests within the budget hash each new blob once.
func TestPutBlobsBudget(t *testing.T) {
	ts := startServer(t, grpcapi.Options{MaxVerifyBytes: 40 << 20})
	big := putChunks(t, ts, randomBytes(1, castore.MaxChunkSize))[0]
	small := putChunks(t, ts, randomBytes(2, 100<<10), randomBytes(3, 50<<10))
	a, b := small[0], small[1]
	var missing castore.ChunkRef
	missing.Digest, missing.Size = castore.Hash([]byte("not stored")), 10
	good := castore.Hash(append(randomBytes(2, 100<<10), randomBytes(3, 50<<10)...))
	wrong := castore.Hash([]byte("wrong"))
	repeat := func(r castore.ChunkRef, n int) []castore.ChunkRef {
		out := make([]castore.ChunkRef, n)
		for i := range out {
			out[i] = r
		}
		return out
	}
	aOtherSize := a
	aOtherSize.Size--

	for _, c := range []struct {
		name     string
		blobs    []*nixcaspb.Blob
		code     codes.Code
		verified uint64
	}{
		// 128 x 16 MiB in a request of a few KB: 2 GiB to hash.
		{"one 16 MiB chunk listed 128 times", []*nixcaspb.Blob{blobMsg(wrong, repeat(big, 128)...)}, codes.ResourceExhausted, 0},
		{"the budget summed over blobs", []*nixcaspb.Blob{blobMsg(wrong, big, big), blobMsg(good, repeat(big, 3)...)}, codes.ResourceExhausted, 0},
		{"a chunk declared with two sizes", []*nixcaspb.Blob{blobMsg(wrong, a, aOtherSize)}, codes.InvalidArgument, 0},
		{"the same blob with two chunk lists", []*nixcaspb.Blob{blobMsg(good, a, b), blobMsg(good, b, a)}, codes.InvalidArgument, 0},
		// Existence is checked for every blob before any is hashed.
		{"a missing chunk after a good blob", []*nixcaspb.Blob{blobMsg(good, a, b), blobMsg(wrong, a, missing)}, codes.FailedPrecondition, 0},
		{"wrong digest within the budget", []*nixcaspb.Blob{blobMsg(wrong, big, big)}, codes.DataLoss, 2 * castore.MaxChunkSize},
		// Listed twice: hashed once.
		{"good blob listed twice", []*nixcaspb.Blob{blobMsg(good, a, b), blobMsg(good, a, b)}, codes.OK, uint64(a.Size + b.Size)},
		{"good blob again, present", []*nixcaspb.Blob{blobMsg(good, a, b)}, codes.OK, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := counterValue(t, ts.reg, "nixcas_verify_bytes_total")
			start := time.Now()
			_, err := ts.sync.PutBlobs(context.Background(), &nixcaspb.PutBlobsRequest{Blobs: c.blobs})
			t.Logf("answered in %v: %v", time.Since(start), err)
			wantCode(t, c.name, err, c.code)
			if got := uint64(counterValue(t, ts.reg, "nixcas_verify_bytes_total") - before); got != c.verified {
				t.Errorf("hashed %d bytes, want %d", got, c.verified)
			}
		})
	}
}

// TestPutBlobsDefaultBudget sends the 2 GiB request to a server with the
// default budget.
func TestPutBlobsDefaultBudget(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	big := putChunks(t, ts, randomBytes(1, castore.MaxChunkSize))[0]
	refs := make([]castore.ChunkRef, grpcapi.DefaultMaxVerifyBytes/castore.MaxChunkSize+1)
	for i := range refs {
		refs[i] = big
	}
	_, err := ts.sync.PutBlobs(context.Background(), &nixcaspb.PutBlobsRequest{Blobs: []*nixcaspb.Blob{blobMsg(castore.Hash([]byte("x")), refs...)}})
	wantCode(t, "one chunk listed past the default budget", err, codes.ResourceExhausted)
	if got := counterValue(t, ts.reg, "nixcas_verify_bytes_total"); got != 0 {
		t.Errorf("hashed %v bytes, want none", got)
	}
}

// TestPutBlobsCountsLogicalBytes checks that a blob of one chunk listed in
// PutBlobs counts its size in the store's logical bytes, as an ingest
// does, so that logicalBytes never falls below uniqueChunkBytes.
func TestPutBlobsCountsLogicalBytes(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	datas := [][]byte{randomBytes(4, 30<<10), randomBytes(5, 70<<10), randomBytes(6, 20<<10), {}}
	refs := putChunks(t, ts, datas...)
	multi := castore.Hash(append(append([]byte(nil), datas[1]...), datas[2]...))
	_, err := ts.sync.PutBlobs(context.Background(), &nixcaspb.PutBlobsRequest{Blobs: []*nixcaspb.Blob{
		blobMsg(refs[0].Digest, refs[0]), blobMsg(multi, refs[1], refs[2]), blobMsg(refs[3].Digest, refs[3]),
	}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := ts.store.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, d := range datas {
		want += uint64(len(d))
	}
	if st.LogicalBytes != want || st.UniqueChunkBytes != want {
		t.Errorf("stats %+v, want logical and unique chunk bytes %d", st, want)
	}
	if got := counterValue(t, ts.reg, "nixcas_chunks_stored_total"); got != 4 {
		t.Errorf("nixcas_chunks_stored_total %v, want 4", got)
	}
}

// TestNARCheckBudget: a PathInfo or CalculateNAR whose NAR is over the
// budget is refused from its directories alone, without reading chunks.
func TestNARCheckBudget(t *testing.T) {
	ts := startServer(t, grpcapi.Options{MaxVerifyBytes: 1 << 20})
	data := randomBytes(7, 600<<10)
	d := putBlob(t, ts, data)
	dir := &castore.Directory{}
	dir.Files = []castore.FileEntry{{Name: "a", Digest: d, Size: uint64(len(data))}, {Name: "b", Digest: d, Size: uint64(len(data))}}
	dd, err := ts.store.PutDirectory(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	before := counterValue(t, ts.reg, "nixcas_verify_bytes_total")
	_, err = ts.paths.CalculateNAR(context.Background(), &castorepb.Entry{Entry: &castorepb.Entry_Directory{Directory: &castorepb.DirectoryEntry{Digest: dd[:], Size: 2}}})
	wantCode(t, "CalculateNAR over the budget", err, codes.ResourceExhausted)
	resp, err := ts.paths.CalculateNAR(context.Background(), &castorepb.Entry{Entry: &castorepb.Entry_File{File: &castorepb.FileEntry{Digest: d[:], Size: uint64(len(data))}}})
	if err != nil {
		t.Fatalf("CalculateNAR within the budget: %v", err)
	}
	if got := uint64(counterValue(t, ts.reg, "nixcas_verify_bytes_total") - before); got != resp.GetNarSize() {
		t.Errorf("hashed %d bytes, want the NAR's %d", got, resp.GetNarSize())
	}
}
