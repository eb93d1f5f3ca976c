package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

const (
	pathA = "0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"
	pathB = "0dxzkflshz3w8ac8bc2p0v3xfbi1szmd-glibc-2.38"
	drv   = "2v0vql0dfrlhn14d2r4vpz7fsjv2hffs-hello-2.12.1.drv"
)

// ingestNAR stores a NAR of one file and returns its PathInfo for path.
func ingestNAR(t *testing.T, s castore.Store, path string, contents string) *store.PathInfo {
	t.Helper()
	var nar []byte
	for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents", contents, ")"} {
		var n [8]byte
		for i := range 8 {
			n[i] = byte(uint64(len(tok)) >> (8 * i))
		}
		nar = append(append(nar, n[:]...), tok...)
		nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
	}
	res, err := narrender.Ingest(context.Background(), bytes.NewReader(nar), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := res.Root
	root.Name = path
	return &store.PathInfo{Path: path, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
}

func openStore(t *testing.T) (*pebblestore.Store, *store.Index) {
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, store.NewIndex(s, s)
}

func TestIndexRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	p := ingestNAR(t, s, pathA, "hello")
	p.References = []string{pathA, pathB}
	p.Deriver = drv
	p.Signatures = []store.Signature{{Name: "cache.example.org-1", Data: bytes.Repeat([]byte{7}, 64)}}
	if err := x.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := x.Get(ctx, p.Digest())
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint() != p.Fingerprint() || got.Deriver != drv || len(got.Signatures) != 1 {
		t.Errorf("round trip: got %+v, want %+v", got, p)
	}
	if got.Fingerprint() != p.NarInfo().Fingerprint() {
		t.Errorf("fingerprint %q, go-nix computes %q", got.Fingerprint(), p.NarInfo().Fingerprint())
	}
	byHash, err := x.GetByNARHash(ctx, p.NARSha256)
	if err != nil || byHash.Path != pathA {
		t.Errorf("GetByNARHash: %v, %v", byHash, err)
	}
	// A second Put with another signature keeps the first.
	q := *p
	q.Signatures = []store.Signature{{Name: "other-1", Data: bytes.Repeat([]byte{8}, 64)}}
	if err := x.Put(ctx, &q); err != nil {
		t.Fatal(err)
	}
	if got, _ := x.Get(ctx, p.Digest()); len(got.Signatures) != 2 {
		t.Errorf("signatures after a second put: %v, want both", got.Signatures)
	}
	n := 0
	if err := x.List(ctx, func(*store.PathInfo) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("List: %d path infos, %v", n, err)
	}
}

func TestIndexRefuses(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	good := ingestNAR(t, s, pathA, "hello")
	missing := *good
	missing.Root.Digest = castore.Hash([]byte("not stored"))
	for _, tc := range []struct {
		name string
		p    store.PathInfo
		want error
	}{
		{"bad store path", func() store.PathInfo { p := *good; p.Path = "hello"; p.Root.Name = "hello"; return p }(), store.ErrInvalid},
		{"root name differs", func() store.PathInfo { p := *good; p.Root.Name = pathB; return p }(), store.ErrInvalid},
		{"unsorted references", func() store.PathInfo { p := *good; p.References = []string{pathB, pathA}; return p }(), store.ErrInvalid},
		{"bad reference", func() store.PathInfo { p := *good; p.References = []string{"x"}; return p }(), store.ErrInvalid},
		{"deriver not a drv", func() store.PathInfo { p := *good; p.Deriver = pathB; return p }(), store.ErrInvalid},
		{"bad CA", func() store.PathInfo { p := *good; p.CA = "fixed:r:sha256:zzz"; return p }(), store.ErrInvalid},
		{"name ..", func() store.PathInfo { p := *good; p.Path = pathA[:33] + ".."; p.Root.Name = p.Path; return p }(), store.ErrInvalid},
		{"name .hidden", func() store.PathInfo { p := *good; p.Path = pathA[:33] + ".hidden"; p.Root.Name = p.Path; return p }(), store.ErrInvalid},
		{"name with a space", func() store.PathInfo { p := *good; p.Path = pathA[:33] + "a b"; p.Root.Name = p.Path; return p }(), store.ErrInvalid},
		{"name too long", func() store.PathInfo {
			p := *good
			p.Path = pathA[:33] + strings.Repeat("a", 212)
			p.Root.Name = p.Path
			return p
		}(), store.ErrInvalid},
		{"reference named .x", func() store.PathInfo { p := *good; p.References = []string{pathB[:33] + ".x"}; return p }(), store.ErrInvalid},
		{"tree not stored", missing, store.ErrIncomplete},
	} {
		err := x.Put(ctx, &tc.p)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := x.Get(ctx, good.Digest()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: refused PathInfo is visible (%v)", tc.name, err)
		}
	}
	if _, err := x.GetByNARHash(ctx, sha256.Sum256(nil)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetByNARHash of unknown hash: %v", err)
	}
}

// TestNARFile: the names uploaded NAR files go by are kept, each with its
// compression, several per NAR, across a reopen; bad records are refused.
func TestNARFile(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := store.NewIndex(s, s)
	sum := sha256.Sum256([]byte("a NAR"))
	names := map[string]store.NARFile{
		"nar/0a.nar.xz":  {NARSha256: sum, Compression: "xz"},
		"nar/0b.nar.zst": {NARSha256: sum, Compression: "zstd"},
		"nar/0c.nar":     {NARSha256: sha256.Sum256([]byte("another")), Compression: "gzip"},
	}
	for url, f := range names {
		if err := x.PutNARFile(ctx, url, f); err != nil {
			t.Fatalf("PutNARFile %s: %v", url, err)
		}
	}
	// Replacing a name.
	names["nar/0c.nar"] = store.NARFile{NARSha256: sum, Compression: "none"}
	if err := x.PutNARFile(ctx, "nar/0c.nar", names["nar/0c.nar"]); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		url string
		f   store.NARFile
	}{
		{"", store.NARFile{Compression: "xz"}},
		{"nar/" + string(bytes.Repeat([]byte("a"), 1100)), store.NARFile{Compression: "xz"}},
		{"nar/0d.nar", store.NARFile{}},
		{"nar/0d.nar", store.NARFile{Compression: string(bytes.Repeat([]byte("z"), 33))}},
	} {
		if err := x.PutNARFile(ctx, bad.url, bad.f); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutNARFile(%.20q, %q): %v, want ErrInvalid", bad.url, bad.f.Compression, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x = store.NewIndex(s, s)
	for url, want := range names {
		got, err := x.GetNARFile(ctx, url)
		if err != nil || got != want {
			t.Errorf("GetNARFile %s after reopening: %+v, %v; want %+v", url, got, err, want)
		}
	}
	for _, url := range []string{"nar/0d.nar", "", "nar/0a.nar"} {
		if _, err := x.GetNARFile(ctx, url); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetNARFile %q: %v, want ErrNotFound", url, err)
		}
	}
	// A record that is not one is corrupt, not a name.
	if err := s.SetMeta(ctx, castore.MetaRecord{Kind: store.KindNARFile, Key: []byte("nar/short"), Value: []byte{1, 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := x.GetNARFile(ctx, "nar/short"); !errors.Is(err, castore.ErrCorrupt) {
		t.Errorf("GetNARFile of a 2-byte record: %v, want ErrCorrupt", err)
	}
}
