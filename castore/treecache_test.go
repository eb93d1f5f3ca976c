package castore_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
)

// TestTreeCacheReader runs the reader conformance suite through a
// TreeCache, with room for everything and with none.
func TestTreeCacheReader(t *testing.T) {
	for _, max := range []int64{64 << 20, 0} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			castoretest.RunReader(t, func(*testing.T) (castore.ReadStore, castore.Store) {
				seed := new(castore.MemoryStore)
				return castore.NewTreeCache(seed, max), seed
			})
		})
	}
}

// countingReads counts the directory and blob index reads that reach
// the store.
type countingReads struct {
	castore.Store
	dirs, indexes int
}

func (c *countingReads) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	c.dirs++
	return c.Store.GetDirectory(ctx, d)
}

func (c *countingReads) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	c.indexes++
	return c.Store.GetBlobIndex(ctx, d)
}

// treeDir is a directory with one file named name.
func treeDir(t *testing.T, name string) *castore.Directory {
	t.Helper()
	var dir castore.Directory
	dir.Add(castore.Entry{Name: name, Kind: castore.KindFile, Digest: castore.Hash([]byte(name)), Size: uint64(len(name))})
	if err := dir.Validate(); err != nil {
		t.Fatal(err)
	}
	return &dir
}

// TestTreeCache: what is read once is read again from memory; a blob
// index handed out is the caller's; missing items are not remembered
// (put later, they are found); the bytes held never pass the bound,
// entries used since the last turn of generations stay, and entries too
// large are read through.
func TestTreeCache(t *testing.T) {
	ctx := context.Background()
	seed := &countingReads{Store: new(castore.MemoryStore)}
	const max = 16 << 10
	c := castore.NewTreeCache(seed, max)

	// Missing, then put: found.
	dir := treeDir(t, "a")
	d := dir.Digest()
	if _, err := c.GetDirectory(ctx, d); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("missing directory: %v; want ErrNotFound", err)
	}
	if _, err := seed.PutDirectory(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		got, err := c.GetDirectory(ctx, d)
		if err != nil || got.Digest() != d {
			t.Fatalf("read %d of directory %s: %v", i, d, err)
		}
	}
	if seed.dirs != 2 {
		t.Fatalf("three reads after a miss reached the store %d times; want 2 (the miss, the first read)", seed.dirs-1)
	}

	// A blob index: the caller owns what it gets.
	blob, chunks := castoretest.MustPutBlob(t, seed, []byte("onetwo"), 3)
	got, err := c.GetBlobIndex(ctx, blob)
	if err != nil || len(got) != 2 {
		t.Fatalf("blob index: %v, %v", got, err)
	}
	got[0] = castore.ChunkRef{}
	again, err := c.GetBlobIndex(ctx, blob)
	if err != nil || again[0] != chunks[0] || again[1] != chunks[1] {
		t.Fatalf("blob index after the caller changed its copy: %v, %v; want %v", again, err, chunks)
	}
	if seed.indexes != 1 {
		t.Fatalf("two blob index reads reached the store %d times; want 1", seed.indexes)
	}

	// Many directories: the bound holds; the one read all along stays.
	for i := range 1000 {
		dir := treeDir(t, fmt.Sprintf("file-%04d", i))
		if _, err := seed.PutDirectory(ctx, dir); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetDirectory(ctx, dir.Digest()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetDirectory(ctx, d); err != nil {
			t.Fatal(err)
		}
		if st := c.Stats(); st.Bytes > max {
			t.Fatalf("after %d directories: %d bytes held, bound %d", i+1, st.Bytes, max)
		}
	}
	st := c.Stats()
	if st.Entries == 0 || st.Entries >= 1000 {
		t.Fatalf("after 1000 directories: %+v; want some kept, most dropped", st)
	}
	if seed.dirs != 2+1000 {
		t.Fatalf("the directory read after each new one reached the store %d times; want never", seed.dirs-2-1000)
	}

	// Too large to keep: read through each time.
	var big castore.Directory
	for i := range 200 {
		big.Add(castore.Entry{Name: fmt.Sprintf("entry-%03d", i), Kind: castore.KindSymlink, Target: "t"})
	}
	bd, err := seed.PutDirectory(ctx, &big)
	if err != nil {
		t.Fatal(err)
	}
	n := seed.dirs
	for range 2 {
		if _, err := c.GetDirectory(ctx, bd); err != nil {
			t.Fatal(err)
		}
	}
	if seed.dirs-n != 2 {
		t.Fatalf("two reads of a directory larger than a generation of a shard (max/32) reached the store %d times; want 2", seed.dirs-n)
	}
	if st := c.Stats(); st.Bytes > max {
		t.Fatalf("%d bytes held, bound %d", st.Bytes, max)
	}
}

// BenchmarkTreeCacheParallel: concurrent look-ups of directories that
// are all held, as parallel NAR responses of warm trees make them.
func BenchmarkTreeCacheParallel(b *testing.B) {
	ctx := context.Background()
	seed := new(castore.MemoryStore)
	c := castore.NewTreeCache(seed, 64<<20)
	var ds []castore.Digest
	for i := range 1024 {
		var dir castore.Directory
		name := fmt.Sprintf("file-%04d", i)
		dir.Add(castore.Entry{Name: name, Kind: castore.KindFile, Digest: castore.Hash([]byte(name)), Size: uint64(len(name))})
		d, err := seed.PutDirectory(ctx, &dir)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.GetDirectory(ctx, d); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var start atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(389)) // each goroutine on keys of its own
		for pb.Next() {
			if _, err := c.GetDirectory(ctx, ds[i%len(ds)]); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}
