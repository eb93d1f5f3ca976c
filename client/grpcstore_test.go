package client_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/wrap"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/store"
)

func openLocal(t *testing.T) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "local"), pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// remoteOf returns the gRPC store of a new server on loopback, through a
// client, and the server's own store.
func remoteOf(t *testing.T) (*client.GRPCStore, castore.Store) {
	t.Helper()
	ts := startServer(t)
	return dial(t, ts.addr, new(castore.MemoryStore)).Remote(), ts.store
}

var testRetries = wrap.RetryOptions{Transient: client.Transient, Retries: 2, Delay: time.Millisecond}

func TestGRPCStoreConformance(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) (castore.ReadStore, castore.Store)
	}{
		{"GRPCStore", func(t *testing.T) (castore.ReadStore, castore.Store) { return remoteOf(t) }},
		{"Retrying(GRPCStore)", func(t *testing.T) (castore.ReadStore, castore.Store) {
			r, seed := remoteOf(t)
			rs, err := wrap.Retrying(r, testRetries)
			if err != nil {
				t.Fatal(err)
			}
			return rs, seed
		}},
		{"ReadThrough(Pebble, Retrying(GRPCStore))", func(t *testing.T) (castore.ReadStore, castore.Store) {
			r, seed := remoteOf(t)
			rs, err := wrap.Retrying(r, testRetries)
			if err != nil {
				t.Fatal(err)
			}
			return wrap.ReadThrough(openLocal(t), rs), seed
		}},
		{"RemoteStore", func(t *testing.T) (castore.ReadStore, castore.Store) {
			ts := startServer(t)
			rs, err := client.NewRemoteStore(context.Background(), dial(t, ts.addr, openLocal(t)), client.ProxyOptions{CacheSize: 1 << 20, RetryDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return rs, ts.store
		}},
		{"NewGRPCStore", func(t *testing.T) (castore.ReadStore, castore.Store) {
			ts := startServer(t)
			conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			return client.NewGRPCStore(conn), ts.store
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { castoretest.RunReader(t, tt.open) })
	}
	// The whole store suite on ReadThrough(Pebble, gRPC store of an
	// empty server): writes go to the local store, reads miss both.
	t.Run("Store/ReadThrough(Pebble, GRPCStore)", func(t *testing.T) {
		castoretest.Run(t, func(t *testing.T) castore.Store {
			r, _ := remoteOf(t)
			return wrap.ReadThrough(openLocal(t), r)
		})
	})
}

// TestGRPCStoreUnavailable: a server that is gone is a transient error,
// which Retrying tries again and then reports with the count of tries.
func TestGRPCStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	c := dial(t, ts.addr, new(castore.MemoryStore))
	r := c.Remote()
	d := castoretest.MustPutChunk(t, ts.store, []byte("here"))
	castoretest.MustGetChunk(t, r, d)
	rs, err := wrap.Retrying(r, testRetries)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.Stop()
	calls := []struct {
		name string
		call func() error
	}{
		{"HasChunk", func() error { _, err := rs.HasChunk(ctx, d); return err }},
		{"GetChunk", func() error { _, err := rs.GetChunk(ctx, d, nil); return err }},
		{"GetBlobIndex", func() error { _, err := rs.GetBlobIndex(ctx, d); return err }},
		{"GetDirectory", func() error { _, err := rs.GetDirectory(ctx, d); return err }},
	}
	for _, c := range calls {
		err := c.call()
		if !client.Transient(err) || errors.Is(err, castore.ErrNotFound) {
			t.Errorf("%s with the server gone: %v, want a transient error", c.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "failed 3 times") {
			t.Errorf("%s with the server gone: %q does not count the tries", c.name, err)
		}
	}
}

// TestRemoteStoreComposition: the proxy's store is read-only through and
// through, and finds the cache's powers with castore.As.
func TestRemoteStoreComposition(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	cache := openLocal(t)
	rs, err := client.NewRemoteStore(ctx, dial(t, ts.addr, cache), client.ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := castoretest.MustPutChunk(t, ts.store, []byte("upstream chunk"))
	castoretest.MustGetChunk(t, rs, d)
	castoretest.MustHaveChunk(t, cache, d, true)
	if _, err := rs.PutChunk(ctx, castore.NewChunk([]byte("x"))); !errors.Is(err, client.ErrReadOnly) {
		t.Errorf("PutChunk: %v, want ErrReadOnly", err)
	}
	if _, err := castore.PutEncoded(ctx, rs, castore.Hash([]byte("x")), []byte("\x00x")); !errors.Is(err, client.ErrReadOnly) {
		t.Errorf("PutEncoded: %v, want ErrReadOnly", err)
	}
	del, ok := castore.As[castore.ChunkDeleter](rs)
	if !ok {
		t.Fatal("As[ChunkDeleter] found nothing")
	}
	if _, err := del.DeleteChunk(ctx, d); !errors.Is(err, client.ErrReadOnly) {
		t.Errorf("DeleteChunk through As: %v, want ErrReadOnly", err)
	}
	castoretest.MustHaveChunk(t, cache, d, true)
	if p, ok := castore.As[castore.Packer](rs); !ok || p != castore.Packer(cache) {
		t.Errorf("As[Packer] = %v, %v; want the cache", p, ok)
	}
	if st := castoretest.MustStats(t, rs); st.Chunks != 1 {
		t.Errorf("Stats = %+v, want the cache's one chunk", st)
	}
}

// TestRemoteIndexListsRarely: a NAR hash the proxy neither remembers nor
// gets with its store path is found in a listing of the upstream's
// paths, which answers for the hashes asked for after it until it is
// listingFresh old: NAR hashes the upstream does not have, asked for
// again and again, cost one listing, not one each.
func TestRemoteIndexListsRarely(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	var paths []*store.PathInfo
	for i, name := range []string{"0000000000000000000000000000000a-one", "0000000000000000000000000000000b-two"} {
		res := ingestNode(t, ts.store, testtree.File(testtree.Random(uint64(i+1), 1000)))
		root := res.Root
		root.Name = name
		p := &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
		if err := store.NewIndex(ts.store, ts.store).Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	rs, err := client.NewRemoteStore(ctx, dial(t, ts.addr, openLocal(t)), client.ProxyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lists := func() uint64 { return grpcCalls(t, ts.reg, "PathInfoService/List") }
	client.SetListingFresh(t, time.Hour)
	idx := rs.Index()
	for i := range 20 {
		var h [sha256.Size]byte
		h[0] = byte(i)
		if _, err := idx.GetByNARHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetByNARHash of a NAR the upstream lacks: %v, want ErrNotFound", err)
		}
	}
	if n := lists(); n != 1 {
		t.Errorf("20 NAR hashes the upstream lacks listed its paths %d times, want once", n)
	}
	// The paths listed are found, by their store paths.
	for _, p := range paths {
		got, err := idx.GetByNARHash(ctx, p.NARSha256)
		if err != nil || got.Path != p.Path {
			t.Fatalf("GetByNARHash of %s: %v, %v", p.Path, got, err)
		}
	}
	if n := lists(); n != 1 {
		t.Errorf("listed %d times, want once", n)
	}
	// A listing older than listingFresh is listed again.
	client.SetListingFresh(t, 0)
	if _, err := idx.GetByNARHash(ctx, [sha256.Size]byte{0xff}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetByNARHash: %v, want ErrNotFound", err)
	}
	if n := lists(); n != 2 {
		t.Errorf("after listingFresh: listed %d times in all, want twice", n)
	}
}
