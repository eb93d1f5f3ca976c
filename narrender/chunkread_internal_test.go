package narrender

import (
	"context"
	"errors"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
)

// TestReadChunk: a chunk of the size its reference says is read into the
// buffer given; one of another size, or a missing one, is an error, the
// size naming the chunk as corrupt.
func TestReadChunk(t *testing.T) {
	ctx := context.Background()
	s := new(castore.MemoryStore)
	data := []byte("chunk bytes")
	d := castoretest.MustPutChunk(t, s, data)
	dst := make([]byte, 3, 64)
	got, err := readChunk(ctx, s, castore.ChunkRef{Digest: d, Size: uint32(len(data))}, dst)
	if err != nil || string(got) != string(data) {
		t.Fatalf("read %q, %v; want %q", got, err, data)
	}
	if &got[0] != &dst[:1][0] {
		t.Errorf("the chunk was not read into the buffer given")
	}
	for _, size := range []uint32{uint32(len(data)) - 1, uint32(len(data)) + 1, 0} {
		_, err := readChunk(ctx, s, castore.ChunkRef{Digest: d, Size: size}, nil)
		if !errors.Is(err, castore.ErrCorrupt) {
			t.Errorf("chunk of %d bytes read as %d: %v; want ErrCorrupt", len(data), size, err)
		}
	}
	if _, err := readChunk(ctx, s, castore.ChunkRef{Digest: castore.Hash([]byte("absent")), Size: 6}, nil); !errors.Is(err, castore.ErrNotFound) {
		t.Errorf("missing chunk: %v; want ErrNotFound", err)
	}
}
