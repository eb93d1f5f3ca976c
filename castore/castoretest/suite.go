package castoretest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// EmptyDirectoryDigest is the digest of the empty directory (zero bytes of
// protobuf), as snix computes it.
const EmptyDirectoryDigest = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"

// Run runs the conformance suite as subtests of t. open must return a new,
// empty store each time it is called. The parts about optional powers
// (castore.ChunkDeleter, castore.ChunkScanner, castore.Packer) run when
// castore.As finds the power in the store, through its wrappers, and are
// skipped otherwise.
func Run(t *testing.T, open func(t *testing.T) castore.Store) {
	RunWith(t, open, Options{})
}

// Options adjust the suite. Zero fields take defaults.
type Options struct {
	// LargeBlobSize is the size of the blob LargeBlob streams through
	// castore.Writer and reads back: default 64 MiB, 8 MiB with -short.
	// A caller whose store adds nothing that depends on the blob's size
	// (a wrapper passing calls through) can take less; the blob should
	// still span many chunks and any buffer or cache of the store.
	LargeBlobSize int64
}

// RunWith runs the suite as [Run] does, adjusted by opts.
func RunWith(t *testing.T, open func(t *testing.T) castore.Store, opts Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s castore.Store)
	}{
		{"MissingKeys", testMissingKeys},
		{"ChunkRoundTrip", testChunkRoundTrip},
		{"ChunkDst", testChunkDst},
		{"WrongDigest", testWrongDigest},
		{"ChunkTooLarge", testChunkTooLarge},
		{"BlobIndexRoundTrip", testBlobIndexRoundTrip},
		{"BlobIndexInvalid", testBlobIndexInvalid},
		{"DirectoryRoundTrip", testDirectoryRoundTrip},
		{"DirectoryInvalid", testDirectoryInvalid},
		{"ConcurrentSamePuts", testConcurrentSamePuts},
		{"ConcurrentDistinctPuts", testConcurrentDistinctPuts},
		{"Sync", testSync},
		{"CloseTwice", testCloseTwice},
		{"LargeBlob", func(t *testing.T, s castore.Store) { testLargeBlob(t, s, opts.LargeBlobSize) }},
		{"PutEncodedWrongDigest", testPutEncodedWrongDigest},
		{"DeleteChunk", testDeleteChunk},
		{"ScanChunksOrder", testScanChunksOrder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// RandomBytes returns n pseudo-random (incompressible) bytes, the same for
// the same seed.
func RandomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	rand.NewChaCha8(s).Read(b)
	return b
}

// CompressibleBytes returns n bytes of repetitive text that lz4 shrinks
// several times over.
func CompressibleBytes(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "line %d: the quick brown fox jumps over the lazy dog\n", i%1000)
	}
	return b.Bytes()[:n]
}

// MustPutChunk stores data as a chunk and returns its digest.
func MustPutChunk(t testing.TB, s castore.ChunkStore, data []byte) castore.Digest {
	t.Helper()
	c := castore.NewChunk(data)
	if _, err := s.PutChunk(context.Background(), c); err != nil {
		t.Fatalf("PutChunk(%d bytes): %v", len(data), err)
	}
	return c.Digest()
}

// MustGetChunk returns the chunk d.
func MustGetChunk(t testing.TB, s castore.ChunkReader, d castore.Digest) []byte {
	t.Helper()
	b, err := s.GetChunk(context.Background(), d, nil)
	if err != nil {
		t.Fatalf("GetChunk(%s): %v", d, err)
	}
	return b
}

// MustHaveChunk fails t unless HasChunk(d) reports want.
func MustHaveChunk(t testing.TB, s castore.ChunkReader, d castore.Digest, want bool) {
	t.Helper()
	ok, err := s.HasChunk(context.Background(), d)
	if err != nil {
		t.Fatalf("HasChunk(%s): %v", d, err)
	}
	if ok != want {
		t.Fatalf("HasChunk(%s) = %v, want %v", d, ok, want)
	}
}

// MustPutBlob cuts data into pieces of chunkSize bytes (the last one
// shorter), stores them and records the blob, returning its digest and
// chunk list. An empty data is the empty blob, with no chunks.
func MustPutBlob(t testing.TB, s castore.Store, data []byte, chunkSize int) (castore.Digest, []castore.ChunkRef) {
	t.Helper()
	var refs []castore.ChunkRef
	for p := range slices.Chunk(data, chunkSize) {
		refs = append(refs, castore.ChunkRef{Digest: MustPutChunk(t, s, p), Size: uint32(len(p))})
	}
	d := castore.Hash(data)
	if err := s.PutBlob(context.Background(), d, uint64(len(data)), refs); err != nil {
		t.Fatalf("PutBlob(%s, %d bytes, %d chunks): %v", d, len(data), len(refs), err)
	}
	return d, refs
}

// MustPutDirectory stores dir and returns its digest.
func MustPutDirectory(t testing.TB, s castore.DirectoryStore, dir *castore.Directory) castore.Digest {
	t.Helper()
	d, err := s.PutDirectory(context.Background(), dir)
	if err != nil {
		t.Fatalf("PutDirectory: %v", err)
	}
	return d
}

// MustStats returns the store's counters.
func MustStats(t testing.TB, s castore.Store) castore.Stats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

// wantErr fails t unless err wraps target.
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %v, want %v", what, err, target)
	}
}

// wantStats fails t unless the store's counters are want.
func wantStats(t testing.TB, s castore.Store, want castore.Stats) {
	t.Helper()
	if got := MustStats(t, s); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
}

func testMissingKeys(t *testing.T, s castore.Store) {
	ctx := context.Background()
	d := castore.Hash([]byte("not stored"))
	MustHaveChunk(t, s, d, false)
	_, err := s.GetChunk(ctx, d, nil)
	wantErr(t, "GetChunk", err, castore.ErrNotFound)
	_, err = s.GetBlobIndex(ctx, d)
	wantErr(t, "GetBlobIndex", err, castore.ErrNotFound)
	_, err = s.GetDirectory(ctx, d)
	wantErr(t, "GetDirectory", err, castore.ErrNotFound)
	// The empty blob's digest is no exception.
	MustHaveChunk(t, s, castore.EmptyDigest, false)
	wantStats(t, s, castore.Stats{})
}

func testChunkRoundTrip(t *testing.T, s castore.Store) {
	ctx := context.Background()
	// A store that packs chunks into frames (pebblestore.Store) is
	// measured once they are packed, each alone in its frame: a frame
	// costs a header and a checksum, and an empty chunk no frame at all.
	packer, packs := castore.As[castore.Packer](s)
	tests := []struct {
		name string
		data []byte
		// stored reports whether a stored size is right for the data.
		stored, packed func(n uint64) bool
	}{
		{"empty", []byte{}, func(n uint64) bool { return n >= 1 }, func(n uint64) bool { return n <= 32 }},
		{"one byte", []byte{'x'}, func(n uint64) bool { return n >= 1 && n <= 2 }, func(n uint64) bool { return n >= 1 && n <= 32 }},
		{"compressible 256 KiB", CompressibleBytes(256 << 10), func(n uint64) bool { return n < 64<<10 }, func(n uint64) bool { return n < 64<<10 }},
		{"random 256 KiB", RandomBytes(1, 256<<10), func(n uint64) bool { return n >= 256<<10 && n <= 256<<10+1 }, func(n uint64) bool { return n >= 256<<10 && n <= 256<<10+64 }},
	}
	var want castore.Stats
	for _, tt := range tests {
		c := castore.NewChunk(tt.data)
		added, err := s.PutChunk(ctx, c)
		if err != nil || !added {
			t.Fatalf("%s: PutChunk = %v, %v; want true, nil", tt.name, added, err)
		}
		MustHaveChunk(t, s, c.Digest(), true)
		got := MustGetChunk(t, s, c.Digest())
		if !bytes.Equal(got, tt.data) {
			t.Fatalf("%s: GetChunk returned %d bytes differing from the %d put", tt.name, len(got), len(tt.data))
		}
		ok := tt.stored
		if packs {
			if err := packer.PackPending(ctx); err != nil {
				t.Fatal(err)
			}
			ok = tt.packed
			if got := MustGetChunk(t, s, c.Digest()); !bytes.Equal(got, tt.data) {
				t.Fatalf("%s: GetChunk after packing returned %d bytes differing from the %d put", tt.name, len(got), len(tt.data))
			}
		}
		before := want.StoredBytes
		want.Chunks++
		want.UniqueChunkBytes += uint64(len(tt.data))
		st := MustStats(t, s)
		want.StoredBytes = st.StoredBytes
		want.Frames = st.Frames
		if stored := st.StoredBytes - before; !ok(stored) {
			t.Errorf("%s: stored as %d bytes", tt.name, stored)
		}
		if st != want {
			t.Fatalf("%s: Stats = %+v, want %+v", tt.name, st, want)
		}

		// A second put is a no-op.
		added, err = s.PutChunk(ctx, castore.NewChunk(bytes.Clone(tt.data)))
		if err != nil || added {
			t.Fatalf("%s: second PutChunk = %v, %v; want false, nil", tt.name, added, err)
		}
		wantStats(t, s, want)
	}
}

func testChunkDst(t *testing.T, s castore.Store) {
	ctx := context.Background()
	data := CompressibleBytes(100 << 10)
	d := MustPutChunk(t, s, data)
	// GetChunk appends to dst, whatever its capacity.
	for _, dst := range [][]byte{
		[]byte("prefix"),
		append(make([]byte, 0, 1<<20), "prefix"...),
	} {
		got, err := s.GetChunk(ctx, d, dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], data) {
			t.Fatalf("GetChunk(dst of cap %d) did not append the chunk to dst", cap(dst))
		}
	}
	// The caller owns the result: changing it changes nothing stored.
	got := MustGetChunk(t, s, d)
	clear(got)
	if again := MustGetChunk(t, s, d); !bytes.Equal(again, data) {
		t.Fatal("changing GetChunk's result changed the stored chunk")
	}
}

func testWrongDigest(t *testing.T, s castore.Store) {
	data := RandomBytes(2, 10<<10)
	wrong := castore.Hash([]byte("something else"))
	if _, err := castore.VerifyChunk(wrong, data); !errors.Is(err, castore.ErrCorrupt) {
		t.Fatalf("VerifyChunk with a wrong digest: error %v, want ErrCorrupt", err)
	}
	MustHaveChunk(t, s, wrong, false)
	MustHaveChunk(t, s, castore.Hash(data), false)
	wantStats(t, s, castore.Stats{})

	c, err := castore.VerifyChunk(castore.Hash(data), data)
	if err != nil {
		t.Fatalf("VerifyChunk with the right digest: %v", err)
	}
	if _, err := s.PutChunk(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	MustHaveChunk(t, s, c.Digest(), true)
}

func testChunkTooLarge(t *testing.T, s castore.Store) {
	c := castore.NewChunk(make([]byte, castore.MaxChunkSize+1))
	_, err := s.PutChunk(context.Background(), c)
	wantErr(t, "PutChunk of MaxChunkSize+1 bytes", err, castore.ErrInvalid)
	MustHaveChunk(t, s, c.Digest(), false)
	wantStats(t, s, castore.Stats{})
}

func testBlobIndexRoundTrip(t *testing.T, s castore.Store) {
	ctx := context.Background()
	data := RandomBytes(3, 100<<10)
	d, refs := MustPutBlob(t, s, data, 32<<10)
	if len(refs) != 4 {
		t.Fatalf("%d chunks, want 4", len(refs))
	}
	got, err := s.GetBlobIndex(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, refs) {
		t.Fatalf("GetBlobIndex = %v, want %v", got, refs)
	}
	// The caller owns the slice.
	got[0].Size++
	if again, _ := s.GetBlobIndex(ctx, d); !slices.Equal(again, refs) {
		t.Fatal("changing GetBlobIndex's result changed the stored index")
	}
	st := MustStats(t, s)
	if st.LogicalBytes != uint64(len(data)) || st.Blobs != 1 || st.Chunks != 4 || st.UniqueChunkBytes != uint64(len(data)) {
		t.Fatalf("Stats = %+v after one blob of %d bytes in 4 chunks", st, len(data))
	}

	// Writing it again counts its bytes again, its index once.
	if err := s.PutBlob(ctx, d, uint64(len(data)), refs); err != nil {
		t.Fatal(err)
	}
	st.LogicalBytes += uint64(len(data))
	wantStats(t, s, st)

	// A blob of one chunk has no index; its bytes count all the same.
	one := RandomBytes(4, 1000)
	od, orefs := MustPutBlob(t, s, one, 1<<20)
	if len(orefs) != 1 || od != orefs[0].Digest {
		t.Fatalf("one-chunk blob: digest %s, chunks %v", od, orefs)
	}
	_, err = s.GetBlobIndex(ctx, od)
	wantErr(t, "GetBlobIndex of a one-chunk blob", err, castore.ErrNotFound)
	st.LogicalBytes += uint64(len(one))
	st.Chunks++
	st.UniqueChunkBytes += uint64(len(one))
	st.StoredBytes = MustStats(t, s).StoredBytes
	wantStats(t, s, st)

	// So does the empty blob, with no chunk at all.
	if err := s.PutBlob(ctx, castore.EmptyDigest, 0, nil); err != nil {
		t.Fatalf("PutBlob of the empty blob: %v", err)
	}
	_, err = s.GetBlobIndex(ctx, castore.EmptyDigest)
	wantErr(t, "GetBlobIndex of the empty blob", err, castore.ErrNotFound)
	wantStats(t, s, st)

	// Chunks shared between blobs are stored once.
	data2 := append(bytes.Clone(data[:64<<10]), RandomBytes(5, 10)...)
	MustPutBlob(t, s, data2, 32<<10)
	st2 := MustStats(t, s)
	if st2.Chunks != st.Chunks+1 || st2.Blobs != 2 || st2.LogicalBytes != st.LogicalBytes+uint64(len(data2)) {
		t.Fatalf("Stats = %+v after a blob sharing two chunks, before %+v", st2, st)
	}
}

func testBlobIndexInvalid(t *testing.T, s castore.Store) {
	ctx := context.Background()
	a, b := RandomBytes(6, 1000), RandomBytes(7, 2000)
	refs := []castore.ChunkRef{
		{Digest: MustPutChunk(t, s, a), Size: uint32(len(a))},
		{Digest: MustPutChunk(t, s, b), Size: uint32(len(b))},
	}
	d := castore.Hash(append(bytes.Clone(a), b...))
	before := MustStats(t, s)
	tests := []struct {
		name   string
		d      castore.Digest
		size   uint64
		chunks []castore.ChunkRef
	}{
		{"sizes add up to less", d, 3001, refs},
		{"sizes add up to more", d, 2999, refs},
		{"one chunk of another digest", castore.Hash(a[:10]), uint64(len(a)), refs[:1]},
		{"one chunk of the wrong size", refs[0].Digest, uint64(len(a)) + 1, refs[:1]},
	}
	for _, tt := range tests {
		err := s.PutBlob(ctx, tt.d, tt.size, tt.chunks)
		wantErr(t, "PutBlob, "+tt.name, err, castore.ErrInvalid)
		_, err = s.GetBlobIndex(ctx, tt.d)
		wantErr(t, "GetBlobIndex after PutBlob, "+tt.name, err, castore.ErrNotFound)
		wantStats(t, s, before)
	}
}

// sampleDirectory returns a valid directory with an entry of each kind.
func sampleDirectory() *castore.Directory {
	return &castore.Directory{
		Directories: []castore.DirectoryEntry{
			{Name: "bin", Digest: castore.Hash([]byte("bin")), Size: 3},
			{Name: "lib", Digest: castore.Hash([]byte("lib")), Size: 0},
		},
		Files: []castore.FileEntry{
			{Name: "README", Digest: castore.Hash([]byte("readme")), Size: 6},
			{Name: "run.sh", Digest: castore.Hash([]byte("#!/bin/sh")), Size: 9, Executable: true},
		},
		Symlinks: []castore.SymlinkEntry{
			{Name: "current", Target: "../current"},
		},
	}
}

func testDirectoryRoundTrip(t *testing.T, s castore.Store) {
	ctx := context.Background()
	empty := MustPutDirectory(t, s, &castore.Directory{})
	if empty.String() != EmptyDirectoryDigest {
		t.Fatalf("empty directory digest %s, want %s", empty, EmptyDirectoryDigest)
	}
	got, err := s.GetDirectory(ctx, empty)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Directories)+len(got.Files)+len(got.Symlinks) != 0 {
		t.Fatalf("empty directory read back as %+v", got)
	}

	dir := sampleDirectory()
	d := MustPutDirectory(t, s, dir)
	if d != dir.Digest() {
		t.Fatalf("PutDirectory = %s, Digest() = %s", d, dir.Digest())
	}
	got, err = s.GetDirectory(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Directories, dir.Directories) || !slices.Equal(got.Files, dir.Files) || !slices.Equal(got.Symlinks, dir.Symlinks) {
		t.Fatalf("GetDirectory = %+v, want %+v", got, dir)
	}
	if again := MustPutDirectory(t, s, sampleDirectory()); again != d {
		t.Fatalf("second PutDirectory = %s, want %s", again, d)
	}
	wantStats(t, s, castore.Stats{Directories: 2})
}

func testDirectoryInvalid(t *testing.T, s castore.Store) {
	ctx := context.Background()
	d1 := castore.Hash([]byte("x"))
	tests := []struct {
		name string
		dir  castore.Directory
	}{
		{"unsorted", castore.Directory{Files: []castore.FileEntry{{Name: "b", Digest: d1}, {Name: "a", Digest: d1}}}},
		{"dot dot", castore.Directory{Directories: []castore.DirectoryEntry{{Name: "..", Digest: d1}}}},
		{"slash", castore.Directory{Files: []castore.FileEntry{{Name: "a/b", Digest: d1}}}},
		{"empty name", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "", Target: "x"}}}},
		{"duplicate across lists", castore.Directory{
			Directories: []castore.DirectoryEntry{{Name: "a", Digest: d1}},
			Files:       []castore.FileEntry{{Name: "a", Digest: d1}},
		}},
		{"empty symlink target", castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "l"}}}},
	}
	for _, tt := range tests {
		_, err := s.PutDirectory(ctx, &tt.dir)
		wantErr(t, "PutDirectory, "+tt.name, err, castore.ErrInvalid)
		_, err = s.GetDirectory(ctx, tt.dir.Digest())
		wantErr(t, "GetDirectory after PutDirectory, "+tt.name, err, castore.ErrNotFound)
	}
	wantStats(t, s, castore.Stats{})
}

// parallel runs fn(0) ... fn(n-1) on n goroutines and waits for them.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fn(i) })
	}
	wg.Wait()
}

func testConcurrentSamePuts(t *testing.T, s castore.Store) {
	ctx := context.Background()
	const goroutines = 16
	var chunks [][]byte
	var unique uint64
	for i := range 8 {
		c := RandomBytes(uint64(100+i), 20<<10+i)
		chunks = append(chunks, c)
		unique += uint64(len(c))
	}
	blob := bytes.Join(chunks, nil)
	blobDigest := castore.Hash(blob)
	var refs []castore.ChunkRef
	for _, c := range chunks {
		refs = append(refs, castore.ChunkRef{Digest: castore.Hash(c), Size: uint32(len(c))})
	}
	dir := sampleDirectory()

	var mu sync.Mutex
	var added int
	var errs []error
	parallel(goroutines, func(g int) {
		n := 0
		var err error
		// Each goroutine puts in its own order.
		for i := range chunks {
			c := chunks[(i+g)%len(chunks)]
			ok, e := s.PutChunk(ctx, castore.NewChunk(c))
			if ok {
				n++
			}
			err = errors.Join(err, e)
		}
		_, e := s.PutDirectory(ctx, dir)
		err = errors.Join(err, e)
		mu.Lock()
		added += n
		errs = append(errs, err)
		mu.Unlock()
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if added != len(chunks) {
		t.Fatalf("PutChunk reported %d chunks added, want %d", added, len(chunks))
	}
	// Blob indexes too, once every chunk is in.
	errs = errs[:0]
	parallel(goroutines, func(int) {
		err := s.PutBlob(ctx, blobDigest, uint64(len(blob)), refs)
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	st := MustStats(t, s)
	want := castore.Stats{
		LogicalBytes:     goroutines * uint64(len(blob)),
		UniqueChunkBytes: unique,
		StoredBytes:      st.StoredBytes,
		Chunks:           uint64(len(chunks)),
		Blobs:            1,
		Directories:      1,
	}
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	if st.StoredBytes < unique || st.StoredBytes > unique+uint64(len(chunks)) {
		t.Fatalf("StoredBytes = %d for %d bytes of incompressible chunks", st.StoredBytes, unique)
	}
	for _, c := range chunks {
		if got := MustGetChunk(t, s, castore.Hash(c)); !bytes.Equal(got, c) {
			t.Fatal("chunk read back differs")
		}
	}
}

func testConcurrentDistinctPuts(t *testing.T, s castore.Store) {
	ctx := context.Background()
	const goroutines, perGoroutine = 16, 16
	data := func(g, i int) []byte {
		if i%2 == 0 {
			return RandomBytes(uint64(g*perGoroutine+i), 4<<10+i)
		}
		return append(CompressibleBytes(8<<10), byte(g), byte(i))
	}
	errs := make([]error, goroutines)
	parallel(goroutines, func(g int) {
		for i := range perGoroutine {
			ok, err := s.PutChunk(ctx, castore.NewChunk(data(g, i)))
			if err == nil && !ok {
				err = fmt.Errorf("chunk %d/%d: PutChunk reported it was already stored", g, i)
			}
			if err != nil {
				errs[g] = err
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var unique uint64
	parallel(goroutines, func(g int) {
		for i := range perGoroutine {
			want := data(g, i)
			got, err := s.GetChunk(ctx, castore.Hash(want), nil)
			if err == nil && !bytes.Equal(got, want) {
				err = fmt.Errorf("chunk %d/%d read back differs", g, i)
			}
			if err != nil {
				errs[g] = err
				return
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for g := range goroutines {
		for i := range perGoroutine {
			unique += uint64(len(data(g, i)))
		}
	}
	st := MustStats(t, s)
	if st.Chunks != goroutines*perGoroutine || st.UniqueChunkBytes != unique {
		t.Fatalf("Stats = %+v, want %d chunks of %d bytes", st, goroutines*perGoroutine, unique)
	}
}

func testSync(t *testing.T, s castore.Store) {
	ctx := context.Background()
	MustPutChunk(t, s, []byte("sync me"))
	MustPutDirectory(t, s, &castore.Directory{})
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
}

func testCloseTwice(t *testing.T, s castore.Store) {
	MustPutChunk(t, s, []byte("close me"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
