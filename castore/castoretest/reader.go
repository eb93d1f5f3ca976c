package castoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// RunReader runs the read side of the conformance suite as subtests of t,
// for stores that only read (a store over the network, a read-only
// wrapper). open returns a new store under test, r, and the store it
// reads, seed, empty: the tests write through seed and read through r.
func RunReader(t *testing.T, open func(t *testing.T) (r castore.ReadStore, seed castore.Store)) {
	tests := []struct {
		name string
		fn   func(t *testing.T, r castore.ReadStore, seed castore.Store)
	}{
		{"MissingKeys", testReadMissing},
		{"Chunks", testReadChunks},
		{"ChunkDst", testReadChunkDst},
		{"BlobIndex", testReadBlobIndex},
		{"Directories", testReadDirectories},
		{"ConcurrentReads", testReadConcurrent},
		{"Blob", testReadBlob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, seed := open(t)
			tt.fn(t, r, seed)
		})
	}
}

func testReadMissing(t *testing.T, r castore.ReadStore, _ castore.Store) {
	ctx := context.Background()
	for _, d := range []castore.Digest{castore.Hash([]byte("not stored")), castore.EmptyDigest} {
		MustHaveChunk(t, r, d, false)
		_, err := r.GetChunk(ctx, d, nil)
		wantErr(t, "GetChunk", err, castore.ErrNotFound)
		_, err = r.GetBlobIndex(ctx, d)
		wantErr(t, "GetBlobIndex", err, castore.ErrNotFound)
		_, err = r.GetDirectory(ctx, d)
		wantErr(t, "GetDirectory", err, castore.ErrNotFound)
	}
}

func testReadChunks(t *testing.T, r castore.ReadStore, seed castore.Store) {
	for _, data := range [][]byte{{}, {'x'}, CompressibleBytes(200 << 10), RandomBytes(40, 256<<10)} {
		d := MustPutChunk(t, seed, data)
		MustHaveChunk(t, r, d, true)
		if got := MustGetChunk(t, r, d); !bytes.Equal(got, data) {
			t.Fatalf("chunk of %d bytes read back as %d differing bytes", len(data), len(got))
		}
		// Again: a store that keeps copies reads its copy.
		if got := MustGetChunk(t, r, d); !bytes.Equal(got, data) {
			t.Fatalf("chunk of %d bytes read back the second time as %d differing bytes", len(data), len(got))
		}
	}
}

func testReadChunkDst(t *testing.T, r castore.ReadStore, seed castore.Store) {
	ctx := context.Background()
	data := CompressibleBytes(100 << 10)
	d := MustPutChunk(t, seed, data)
	for _, dst := range [][]byte{[]byte("prefix"), append(make([]byte, 0, 1<<20), "prefix"...)} {
		got, err := r.GetChunk(ctx, d, dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(got, []byte("prefix")) || !bytes.Equal(got[len("prefix"):], data) {
			t.Fatalf("GetChunk(dst of cap %d) did not append the chunk to dst", cap(dst))
		}
	}
	// A missing chunk leaves dst as it was.
	dst := []byte("prefix")
	got, err := r.GetChunk(ctx, castore.Hash([]byte("missing")), dst)
	wantErr(t, "GetChunk of a missing chunk", err, castore.ErrNotFound)
	if string(got) != "prefix" {
		t.Fatalf("GetChunk of a missing chunk returned %q", got)
	}
}

func testReadBlobIndex(t *testing.T, r castore.ReadStore, seed castore.Store) {
	ctx := context.Background()
	data := RandomBytes(41, 100<<10)
	d, refs := MustPutBlob(t, seed, data, 16<<10)
	got, err := r.GetBlobIndex(ctx, d)
	if err != nil {
		t.Fatalf("GetBlobIndex: %v", err)
	}
	if !slices.Equal(got, refs) {
		t.Fatalf("GetBlobIndex = %v, want %v", got, refs)
	}
	// A one-chunk blob has no index.
	od, _ := MustPutBlob(t, seed, RandomBytes(42, 1000), 1<<20)
	_, err = r.GetBlobIndex(ctx, od)
	wantErr(t, "GetBlobIndex of a one-chunk blob", err, castore.ErrNotFound)
	MustHaveChunk(t, r, od, true)
}

func testReadDirectories(t *testing.T, r castore.ReadStore, seed castore.Store) {
	ctx := context.Background()
	for _, dir := range []*castore.Directory{{}, sampleDirectory()} {
		d := MustPutDirectory(t, seed, dir)
		got, err := r.GetDirectory(ctx, d)
		if err != nil {
			t.Fatalf("GetDirectory: %v", err)
		}
		if got.Digest() != d {
			t.Fatalf("GetDirectory(%s) returned directory %s", d, got.Digest())
		}
	}
}

func testReadConcurrent(t *testing.T, r castore.ReadStore, seed castore.Store) {
	ctx := context.Background()
	var chunks [][]byte
	for i := range 16 {
		chunks = append(chunks, RandomBytes(uint64(500+i), 8<<10+i))
		MustPutChunk(t, seed, chunks[i])
	}
	errs := make([]error, 8)
	parallel(8, func(g int) {
		for i := range chunks {
			c := chunks[(i+g)%len(chunks)]
			got, err := r.GetChunk(ctx, castore.Hash(c), nil)
			if err == nil && !bytes.Equal(got, c) {
				err = fmt.Errorf("chunk %d read back differs", i)
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
}

// testReadBlob reads a multi-chunk blob whole with castore.OpenBlob.
func testReadBlob(t *testing.T, r castore.ReadStore, seed castore.Store) {
	ctx := context.Background()
	data := RandomBytes(43, 300<<10)
	d, _ := MustPutBlob(t, seed, data, 64<<10)
	br, err := castore.OpenBlob(ctx, r, d, uint64(len(data)))
	if err != nil {
		t.Fatalf("OpenBlob: %v", err)
	}
	var got bytes.Buffer
	_, err = got.ReadFrom(br)
	br.Close()
	if err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("blob read back as %d bytes, %v", got.Len(), err)
	}
}
