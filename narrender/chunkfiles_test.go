package narrender_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// coldFilesStore is a store whose ChunkFiles hold no chunk (a store whose
// frames are not decoded yet), counting what they are asked for.
type coldFilesStore struct {
	*castore.MemoryStore
	mu    sync.Mutex
	asked map[castore.Digest]int
}

func (s *coldFilesStore) ChunkFiles() castore.ChunkFiles { return coldFiles{s} }

type coldFiles struct{ s *coldFilesStore }

func (c coldFiles) ChunkFile(_ context.Context, d castore.Digest, _ uint32) (*os.File, int64, bool) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.asked[d]++
	return nil, 0, false
}

func (coldFiles) Close() error { return nil }

// TestRenderAsksChunkFileOnce: a file over SingleChunkMax that is one
// chunk, not in a local file, has its chunk asked for once (where each
// ask is a round trip on a shared database), not once as the file's own
// chunk and again as the one chunk of its blob.
func TestRenderAsksChunkFileOnce(t *testing.T) {
	ctx := context.Background()
	entries := testtree.Entries{}
	for i := range 20 {
		entries[fmt.Sprintf("f%02d", i)] = testtree.File(testtree.Random(uint64(10+i), int64(17<<10+i*5001)))
	}
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, testtree.Dir(entries)); err != nil {
		t.Fatal(err)
	}
	s := &coldFilesStore{MemoryStore: new(castore.MemoryStore), asked: map[castore.Digest]int{}}
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var w sendingWriter
	if err := narrender.Render(ctx, &w, s, res.Root); err != nil || !bytes.Equal(w.Bytes(), nar.Bytes()) {
		t.Fatalf("render: %d bytes, %v; want the NAR", w.Len(), err)
	}
	if len(s.asked) < 20 {
		t.Fatalf("%d chunks asked for; want at least one a file", len(s.asked))
	}
	for d, n := range s.asked {
		if n > 1 {
			t.Errorf("chunk %s asked for %d times; want once", d, n)
		}
	}
}
