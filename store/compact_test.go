package store_test

import (
	"context"
	"slices"
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
