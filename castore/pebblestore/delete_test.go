package pebblestore_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

func TestPebbleDeleteChunk(t *testing.T) {
	ctx := t.Context()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "db"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keep := castore.NewChunk(bytes.Repeat([]byte("k"), 5000))
	gone := castore.NewChunk([]byte("a chunk to delete"))
	for _, c := range []castore.Chunk{keep, gone} {
		if _, err := s.PutChunk(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} { // the second delete finds nothing
		ok, err := s.DeleteChunk(ctx, gone.Digest())
		if err != nil || ok != want {
			t.Fatalf("delete %d: %v, %v; want %v", i, ok, err, want)
		}
	}
	if _, err := s.GetChunk(ctx, gone.Digest(), nil); !errors.Is(err, castore.ErrNotFound) {
		t.Errorf("deleted chunk: %v, want ErrNotFound", err)
	}
	if got, err := s.GetChunk(ctx, keep.Digest(), nil); err != nil || !bytes.Equal(got, keep.Data()) {
		t.Errorf("kept chunk: %v", err)
	}
	after, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Chunks != before.Chunks-1 || after.UniqueChunkBytes != before.UniqueChunkBytes-uint64(len(gone.Data())) || after.StoredBytes >= before.StoredBytes {
		t.Errorf("stats %+v after deleting from %+v", after, before)
	}
	var seen []castore.Digest
	err = s.ScanChunks(ctx, func(d castore.Digest, size int) error {
		if d != keep.Digest() || size != len(keep.Data()) {
			t.Errorf("scan: chunk %s of %d bytes", d, size)
		}
		seen = append(seen, d)
		return nil
	})
	if err != nil || len(seen) != 1 {
		t.Errorf("scan: %d chunks, %v", len(seen), err)
	}
	// Put back, counted again.
	if added, err := s.PutChunk(ctx, gone); err != nil || !added {
		t.Fatalf("put again: %v, %v", added, err)
	}
	if again, _ := s.Stats(ctx); again != before {
		t.Errorf("stats %+v after putting back, want %+v", again, before)
	}
}
