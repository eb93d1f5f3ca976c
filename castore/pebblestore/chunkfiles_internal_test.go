package pebblestore

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testpg"
)

// TestPostgresPrefetchChunkFilesCounts: the places PrefetchChunkFiles
// finds stay as long as a window naming them is not dropped, whatever
// windows overlap, a frame retirement comes between them or a look-up
// fails; dropping every window leaves nothing.
func TestPostgresPrefetchChunkFilesCounts(t *testing.T) {
	ctx := context.Background()
	s, err := OpenPostgres(ctx, testpg.New(t), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ds []castore.Digest
	for i := range 4 {
		c := castore.NewChunk(bytes.Repeat([]byte(fmt.Sprintf("chunk %d ", i)), 1000))
		if _, err := s.PutChunk(ctx, c); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, c.Digest())
	}
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	a, b, c, d := ds[0], ds[1], ds[2], ds[3]
	cf := &chunkFiles{s: s, files: make(map[castore.Digest]*chunkFile)}
	defer cf.Close()

	// want checks that cf holds exactly refs, each place found.
	want := func(step string, refs map[castore.Digest]int) {
		t.Helper()
		if len(cf.ahead) != len(refs) {
			t.Errorf("%s: %d chunks held, want %d", step, len(cf.ahead), len(refs))
		}
		for d, n := range refs {
			p, ok := cf.ahead[d]
			switch {
			case !ok:
				t.Errorf("%s: chunk %s dropped, want held %d times", step, d, n)
			case p.refs != n:
				t.Errorf("%s: chunk %s held %d times, want %d", step, d, p.refs, n)
			case !p.known || !p.framed:
				t.Errorf("%s: chunk %s known %v framed %v, want its place", step, d, p.known, p.framed)
			}
		}
	}

	cf.PrefetchChunkFiles(ctx, []castore.Digest{a, b})
	cf.PrefetchChunkFiles(ctx, []castore.Digest{b, c})
	want("[a,b] then [b,c]", map[castore.Digest]int{a: 1, b: 2, c: 1})
	cf.DropChunkFiles([]castore.Digest{a, b})
	want("[a,b] dropped", map[castore.Digest]int{b: 1, c: 1})
	cf.DropChunkFiles([]castore.Digest{b, c})
	want("[b,c] dropped", nil)

	// A frame retirement while [a,b] is held: [a,b] keeps its counts, and
	// its places are looked up again when a window names them.
	cf.PrefetchChunkFiles(ctx, []castore.Digest{a, b})
	s.places.reset()
	cf.PrefetchChunkFiles(ctx, []castore.Digest{b, c})
	if p := cf.ahead[a]; p.known {
		t.Error("after a frame retirement, chunk a's place from before it is still used")
	}
	if p := cf.ahead[a]; p.refs != 1 {
		t.Errorf("after a frame retirement, chunk a held %d times, want 1", p.refs)
	}
	cf.PrefetchChunkFiles(ctx, []castore.Digest{a})
	want("[a,b], retirement, [b,c], [a]", map[castore.Digest]int{a: 2, b: 2, c: 1})
	cf.DropChunkFiles([]castore.Digest{a, b})
	cf.DropChunkFiles([]castore.Digest{a})
	want("[a,b] and [a] dropped", map[castore.Digest]int{b: 1, c: 1})

	// A look-up that fails still counts its window.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	cf.PrefetchChunkFiles(canceled, []castore.Digest{c, d})
	if p := cf.ahead[d]; p.refs != 1 || p.known {
		t.Errorf("after a failed look-up, chunk d held %d times, known %v; want once, not known", p.refs, p.known)
	}
	cf.DropChunkFiles([]castore.Digest{c, d})
	want("failed [c,d] dropped", map[castore.Digest]int{b: 1, c: 1})
	cf.DropChunkFiles([]castore.Digest{b, c})
	want("every window dropped", nil)
}
