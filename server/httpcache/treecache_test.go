package httpcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// treeReads counts the directories and blob indexes read from the store
// it wraps.
type treeReads struct {
	castore.Store
	dirs, indexes atomic.Int64
}

func (t *treeReads) Unwrap() any { return t.Store }

func (t *treeReads) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	t.dirs.Add(1)
	return t.Store.GetDirectory(ctx, d)
}

func (t *treeReads) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	t.indexes.Add(1)
	return t.Store.GetBlobIndex(ctx, d)
}

// TestTreeCacheNAR: through the real handler with the tree cache on, a
// NAR served again is byte for byte the NAR and reads no directory or
// blob index from the store; a garbage collection that deletes another
// path sharing files with it, and a compaction that retires every frame,
// between two responses leave it exact; the deleted path is a clean 404,
// by its NAR hash and by its castore entry (whose directories the cache
// still holds, but not its chunks).
func TestTreeCacheNAR(t *testing.T) {
	ctx := context.Background()
	shared := testtree.Random(11, 300<<10)
	narOf := func(tree *testtree.Node) []byte {
		var b bytes.Buffer
		if err := testtree.WriteNAR(&b, tree); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	narA := narOf(testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{
			"tool": testtree.Exec(testtree.Random(7, 2<<20+77)),
			"sh":   testtree.Link("tool"),
		}),
		"lib":    testtree.File(testtree.Mixed(8, 1<<20)),
		"shared": testtree.File(shared),
		"small":  testtree.File(testtree.Text("small\n")),
	}))
	narB := narOf(testtree.Dir(testtree.Entries{
		"b-only": testtree.File(testtree.Random(13, 400<<10)),
		"dir":    testtree.Dir(testtree.Entries{"x": testtree.File(testtree.Text("b\n"))}),
		"shared": testtree.File(shared),
	}))

	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	index := store.NewIndex(s, s)
	put := func(name string, nar []byte) (*store.PathInfo, string) {
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(nar)
		p := &store.PathInfo{Path: nixbase32.EncodeToString(sum[:20]) + "-" + name, NARSize: uint64(len(nar)), NARSha256: sum, Root: res.Root}
		p.Root.Name = p.Path
		if err := index.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p, "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
	}
	_, urlA := put("a", narA)
	pathB, urlB := put("b", narB)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	cas := &treeReads{Store: s}
	h, err := httpcache.New(httpcache.Options{CAS: cas, Index: index, TreeCacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	check := func(when, url string, nar []byte) {
		t.Helper()
		if got := getRange(t, ts.URL+url, "", http.StatusOK); !bytes.Equal(got, nar) {
			t.Fatalf("%s: GET %s gave %d bytes that differ from the NAR's %d", when, url, len(got), len(nar))
		}
	}
	check("first", urlA, narA)
	check("first", urlB, narB)
	dirs, indexes := cas.dirs.Load(), cas.indexes.Load()
	if dirs == 0 || indexes == 0 {
		t.Fatalf("first responses read %d directories and %d blob indexes from the store; want some of each", dirs, indexes)
	}
	check("again", urlA, narA)
	check("again", urlB, narB)
	if d, i := cas.dirs.Load()-dirs, cas.indexes.Load()-indexes; d != 0 || i != 0 {
		t.Fatalf("responses served again read %d directories and %d blob indexes from the store; want none", d, i)
	}

	// Path b deleted and collected; every frame rewritten or retired.
	if ok, err := index.Delete(ctx, pathB.Digest()); !ok || err != nil {
		t.Fatalf("deleting path b: %v, %v", ok, err)
	}
	gc, err := index.GC(ctx, s, pebblestore.GCOptions{RewriteBelow: 1})
	if err != nil {
		t.Fatal(err)
	}
	if gc.ChunksDeleted == 0 || gc.DirectoriesDeleted == 0 {
		t.Fatalf("collection: %+v; want b's own chunks deleted", gc)
	}
	check("after the collection", urlA, narA)
	if res, err := s.Compact(ctx, pebblestore.CompactOptions{Full: true}); err != nil || res.FramesDeleted == 0 {
		t.Fatalf("compaction: %+v, %v; want frames retired", res, err)
	}
	check("after the compaction", urlA, narA)
	check("after the compaction, again", urlA, narA)

	getRange(t, ts.URL+urlB, "", http.StatusNotFound)
	b, err := proto.Marshal(castore.EntryToProto(pathB.Root))
	if err != nil {
		t.Fatal(err)
	}
	getRange(t, ts.URL+"/nar/snix-castore/"+base64.RawURLEncoding.EncodeToString(b), "", http.StatusNotFound)
}
