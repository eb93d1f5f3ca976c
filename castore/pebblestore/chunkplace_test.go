package pebblestore_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// TestChunkPlace: a packed chunk is in a frame whose file exists, at
// increasing offsets in packing order; a missing chunk is ErrNotFound.
func TestChunkPlace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	chunks := versionedChunks(1, 4)
	ds := putAll(t, s, chunks)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := frameFiles(t, dir)
	names := map[string]bool{}
	for _, f := range files {
		names[filepath.Base(f)] = true
	}
	var last castore.ChunkPlace
	for i, d := range ds {
		p, err := s.ChunkPlace(ctx, d)
		if err != nil || !p.Framed || !names[p.Frame.String()] {
			t.Fatalf("ChunkPlace of chunk %d after packing = %+v, %v; want a frame among %v", i, p, err, files)
		}
		if i > 0 && p.Frame == last.Frame && p.Offset <= last.Offset {
			t.Errorf("chunk %d at offset %d, after chunk %d at %d in the same frame", i, p.Offset, i-1, last.Offset)
		}
		last = p
	}
	if _, err := s.ChunkPlace(ctx, castore.Hash([]byte("never stored"))); !errors.Is(err, castore.ErrNotFound) {
		t.Errorf("ChunkPlace of a missing chunk: %v; want ErrNotFound", err)
	}
}
