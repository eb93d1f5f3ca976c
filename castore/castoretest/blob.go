package castoretest

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// largeBlobSize is the size of the blob testLargeBlob streams unless
// Options say otherwise (less with -short).
const largeBlobSize = 64 << 20

// pseudoRandomReader returns a reader of n deterministic pseudo-random
// bytes, generated as they are read.
func pseudoRandomReader(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// testLargeBlob streams a large blob of size bytes (0: largeBlobSize)
// through castore.Writer, reads it back through castore.OpenBlob and
// compares digests; neither side holds the blob in memory.
func testLargeBlob(t *testing.T, s castore.Store, size int64) {
	ctx := context.Background()
	if size == 0 {
		size = largeBlobSize
		if testing.Short() {
			size = 8 << 20
		}
	}

	w, err := castore.NewWriter(s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h := castore.NewHasher()
	d, n, err := w.WriteBlob(ctx, io.TeeReader(pseudoRandomReader(1, size), h))
	if err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	var want castore.Digest
	h.Sum(want[:0])
	if d != want || n != uint64(size) {
		t.Fatalf("WriteBlob = %s, %d; want %s, %d", d, n, want, size)
	}
	// A small blob in the same batch: one chunk, no index.
	small := []byte("a small file\n")
	sd, sn, err := w.WriteBlob(ctx, bytes.NewReader(small))
	if err != nil {
		t.Fatalf("WriteBlob(small): %v", err)
	}
	if sd != castore.Hash(small) || sn != uint64(len(small)) {
		t.Fatalf("WriteBlob(small) = %s, %d", sd, sn)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}

	idx, err := s.GetBlobIndex(ctx, d)
	if err != nil {
		t.Fatalf("GetBlobIndex: %v", err)
	}
	var sum uint64
	for _, c := range idx {
		sum += uint64(c.Size)
	}
	if len(idx) < 2 || sum != uint64(size) {
		t.Fatalf("blob index of %d chunks covers %d bytes, want %d", len(idx), sum, size)
	}
	st := MustStats(t, s)
	if st.LogicalBytes != uint64(size)+uint64(len(small)) || st.Blobs != 1 || st.UniqueChunkBytes != st.LogicalBytes {
		t.Fatalf("Stats = %+v after writing %d + %d bytes", st, size, len(small))
	}

	r, err := castore.OpenBlob(ctx, s, d, uint64(size))
	if err != nil {
		t.Fatalf("OpenBlob: %v", err)
	}
	h.Reset()
	got, err := io.Copy(h, r)
	r.Close()
	if err != nil {
		t.Fatalf("reading the blob back: %v", err)
	}
	var gotDigest castore.Digest
	h.Sum(gotDigest[:0])
	if got != size || gotDigest != want {
		t.Fatalf("read back %d bytes hashing to %s, want %d hashing to %s", got, gotDigest, size, want)
	}

	r, err = castore.OpenBlob(ctx, s, sd, uint64(len(small)))
	if err != nil {
		t.Fatalf("OpenBlob(small): %v", err)
	}
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(b, small) {
		t.Fatalf("small blob read back as %q, %v", b, err)
	}
}
