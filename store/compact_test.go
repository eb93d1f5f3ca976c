package store_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/store"
)

func TestFileGroup(t *testing.T) {
	tests := []struct{ name, rel, want string }{
		{"go-1.21.0", "bin/go", "go/bin/go"},
		{"go-1.22.0", "bin/go", "go/bin/go"},
		{"python3-3.11.4", "lib/python3.11/os.py", "python/lib/python./os.py"},
		{"openssl-3.0.9-bin", "bin/openssl", "openssl/bin/openssl"},
		{"glibc-2.38", "lib/libc.so.6", "glibc/lib/libc.so."},
		{"hello", "", "hello/"},
		{"source", "a-1/b", "source/a-/b"},
	}
	for _, tt := range tests {
		if got := store.FileGroup(tt.name, tt.rel); got != tt.want {
			t.Errorf("FileGroup(%q, %q) = %q, want %q", tt.name, tt.rel, got, tt.want)
		}
	}
}

// TestChunkOrder: two versions of a two-file tree come out file by file,
// each chunk offset with both versions side by side, shared chunks once.
func TestChunkOrder(t *testing.T) {
	ctx := context.Background()
	cas := new(castore.MemoryStore)
	type version struct {
		name   string
		chunks map[string][]castore.Digest // file → chunks
		root   castore.Entry
	}
	shared := castoretest.MustPutChunk(t, cas, []byte("the same in both"))
	mk := func(name, tag string) version {
		v := version{name: name, chunks: map[string][]castore.Digest{}}
		dir := &castore.Directory{}
		for _, file := range []string{"a", "b"} {
			var refs []castore.ChunkRef
			var data []byte
			for i := range 3 {
				c := []byte(tag + file + string(rune('0'+i)))
				if file == "b" && i == 0 {
					c = []byte("the same in both")
				}
				d := castoretest.MustPutChunk(t, cas, c)
				refs = append(refs, castore.ChunkRef{Digest: d, Size: uint32(len(c))})
				v.chunks[file] = append(v.chunks[file], d)
				data = append(data, c...)
			}
			bd := castore.Hash(data)
			if err := cas.PutBlob(ctx, bd, uint64(len(data)), refs); err != nil {
				t.Fatal(err)
			}
			dir.Files = append(dir.Files, castore.FileEntry{Name: file, Digest: bd, Size: uint64(len(data))})
		}
		v.root = castore.Entry{Kind: castore.KindDirectory, Digest: castoretest.MustPutDirectory(t, cas, dir)}
		return v
	}
	vs := []version{mk("pkg-1.0", "old "), mk("pkg-2.0", "new ")}
	got, err := store.ChunkOrder(ctx, cas, nil, func(yield func(string, castore.Entry) error) error {
		for _, v := range vs {
			if err := yield(v.name, v.root); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []castore.Digest
	for _, file := range []string{"a", "b"} {
		for i := range 3 {
			for _, v := range vs {
				if d := v.chunks[file][i]; !slices.Contains(want, d) {
					want = append(want, d)
				}
			}
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ChunkOrder = %v\nwant %v", got, want)
	}
	if !slices.Contains(got, shared) {
		t.Fatal("the shared chunk is missing")
	}

	// Restricted to the chunks of the new version (those a compaction
	// rewrites), the order is the same with every other chunk left out.
	newer := map[castore.Digest]bool{}
	for _, ds := range vs[1].chunks {
		for _, d := range ds {
			newer[d] = true
		}
	}
	kept, err := store.ChunkOrder(ctx, cas, func(d castore.Digest) bool { return newer[d] }, func(yield func(string, castore.Entry) error) error {
		for _, v := range vs {
			if err := yield(v.name, v.root); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantKept := slices.DeleteFunc(slices.Clone(want), func(d castore.Digest) bool { return !newer[d] })
	if !slices.Equal(kept, wantKept) || len(kept) != len(newer) {
		t.Fatalf("ChunkOrder of the new version's chunks = %v\nwant %v", kept, wantKept)
	}
	none, err := store.ChunkOrder(ctx, cas, func(castore.Digest) bool { return false }, func(yield func(string, castore.Entry) error) error {
		return yield(vs[0].name, vs[0].root)
	})
	if err != nil || len(none) != 0 {
		t.Fatalf("ChunkOrder keeping nothing = %v, %v", none, err)
	}
}

// TestChunkNeighbourhood: the neighbourhood of some new chunks is every
// chunk of the files grouped with theirs, across all versions and in
// ChunkOrder's order; files of other groups, of this package or another,
// are left out.
func TestChunkNeighbourhood(t *testing.T) {
	ctx := context.Background()
	cas := new(castore.MemoryStore)
	type tree struct {
		name  string
		root  castore.Entry
		files map[string][]castore.Digest // file → chunks
	}
	// mk stores a tree of three-chunk files, file → tag; the same tag
	// gives the same content.
	mk := func(name string, tags map[string]string) tree {
		tr := tree{name: name, files: map[string][]castore.Digest{}}
		dir := &castore.Directory{}
		for _, file := range slices.Sorted(maps.Keys(tags)) {
			var refs []castore.ChunkRef
			var data []byte
			for i := range 3 {
				c := []byte(fmt.Sprintf("%s %s chunk %d", file, tags[file], i))
				d := castoretest.MustPutChunk(t, cas, c)
				refs = append(refs, castore.ChunkRef{Digest: d, Size: uint32(len(c))})
				tr.files[file] = append(tr.files[file], d)
				data = append(data, c...)
			}
			bd := castore.Hash(data)
			if err := cas.PutBlob(ctx, bd, uint64(len(data)), refs); err != nil {
				t.Fatal(err)
			}
			dir.Files = append(dir.Files, castore.FileEntry{Name: file, Digest: bd, Size: uint64(len(data))})
		}
		tr.root = castore.Entry{Kind: castore.KindDirectory, Digest: castoretest.MustPutDirectory(t, cas, dir)}
		return tr
	}
	trees := []tree{
		mk("pkg-1.0", map[string]string{"a": "1", "b": "1", "c": "1"}),
		mk("other-1.0", map[string]string{"a": "o1"}),
		mk("pkg-2.0", map[string]string{"a": "2", "b": "1", "c": "1"}),
		mk("pkg-3.0", map[string]string{"a": "2", "b": "3", "c": "1"}),
	}
	roots := func(yield func(string, castore.Entry) error) error {
		for _, tr := range trees {
			if err := yield(tr.name, tr.root); err != nil {
				return err
			}
		}
		return nil
	}
	all, err := store.ChunkOrder(ctx, cas, nil, roots)
	if err != nil {
		t.Fatal(err)
	}
	// chunksOf returns the chunks of file in the trees whose name starts
	// with prefix.
	chunksOf := func(prefix, file string) (ds []castore.Digest) {
		for _, tr := range trees {
			if strings.HasPrefix(tr.name, prefix) {
				ds = append(ds, tr.files[file]...)
			}
		}
		return ds
	}
	tests := []struct {
		name   string
		new    []castore.Digest // the chunks isNew accepts
		groups []castore.Digest // the chunks of the groups expected
	}{
		{"nothing new", nil, nil},
		{"one new chunk of b", trees[3].files["b"][1:2], chunksOf("pkg-", "b")},
		{"the new version of a", trees[2].files["a"], chunksOf("pkg-", "a")},
		{"a chunk of another package's a", trees[1].files["a"][:1], chunksOf("other-", "a")},
		{"new chunks in two groups", append(slices.Clone(trees[3].files["b"]), trees[1].files["a"]...), append(chunksOf("pkg-", "b"), chunksOf("other-", "a")...)},
		{"a chunk no file holds", []castore.Digest{castore.Hash([]byte("nowhere"))}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := store.ChunkNeighbourhood(ctx, cas, func(d castore.Digest) bool { return slices.Contains(tt.new, d) }, roots)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.DeleteFunc(slices.Clone(all), func(d castore.Digest) bool { return !slices.Contains(tt.groups, d) })
			if !slices.Equal(got, want) {
				t.Fatalf("ChunkNeighbourhood = %v\nwant %v", got, want)
			}
		})
	}
}
