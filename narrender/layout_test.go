package narrender_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// TestLayout checks, on every edge-case tree, that the layout computed from
// directories alone agrees with the NAR: its size, each node's path, type and
// content offset as the NAR reader finds them, and that any byte range
// renders as the same slice of the NAR.
func TestLayout(t *testing.T) {
	ctx := context.Background()
	// Small chunks, so files span several and ranges start inside them.
	opts := castore.WriterOptions{Chunker: castore.ChunkerOptions{MinSize: 1 << 10, AvgSize: 4 << 10, MaxSize: 16 << 10}}
	for _, tree := range testtree.EdgeCases() {
		t.Run(tree.Name, func(t *testing.T) {
			var nar bytes.Buffer
			if err := testtree.WriteNAR(&nar, tree.Root); err != nil {
				t.Fatal(err)
			}
			s := new(castore.MemoryStore)
			res, err := narrender.Ingest(ctx, bytes.NewReader(nar.Bytes()), s, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkLayout(t, s, res.Root, nar.Bytes())
		})
	}
}

func checkLayout(t *testing.T, s narrender.Store, root castore.Entry, nar []byte) {
	t.Helper()
	ctx := context.Background()

	// The nodes as the reader sees them.
	type seen struct {
		path     string
		typ      narrender.Type
		contents uint64
	}
	var want []seen
	r := narrender.NewReader(bytes.NewReader(nar))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, seen{h.Path(), h.Type, h.Offset})
	}
	kinds := map[castore.Kind]narrender.Type{castore.KindFile: narrender.TypeRegular, castore.KindDirectory: narrender.TypeDirectory, castore.KindSymlink: narrender.TypeSymlink}
	var got []seen
	size, err := narrender.Walk(ctx, s, root, func(n narrender.Node) error {
		got = append(got, seen{n.Path(), kinds[n.Entry.Kind], n.Contents})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if size != uint64(len(nar)) {
		t.Errorf("Walk: size %d, NAR has %d bytes", size, len(nar))
	}
	if len(got) != len(want) {
		t.Fatalf("Walk: %d nodes, reader finds %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("node %d: Walk gives %+v, reader %+v", i, got[i], want[i])
		}
	}

	// Ranges: around every content offset, and random ones.
	n := uint64(len(nar))
	var ranges [][2]uint64
	step := max(1, len(want)/40) // at most about 40 nodes
	for i := 0; i < len(want); i += step {
		w := want[i]
		for _, d := range []uint64{0, 1, 7, 8} {
			if w.contents >= d {
				ranges = append(ranges, [2]uint64{w.contents - d, min(n-(w.contents-d), 1+d*3)})
			}
		}
	}
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	for range 20 {
		off := rng.Uint64N(n)
		ranges = append(ranges, [2]uint64{off, 1 + rng.Uint64N(n-off)})
	}
	ranges = append(ranges, [2]uint64{0, n}, [2]uint64{n - 1, 1}, [2]uint64{0, 1})
	for _, rg := range ranges {
		var out bytes.Buffer
		if err := narrender.RenderRange(ctx, &out, s, root, rg[0], rg[1]); err != nil {
			t.Fatalf("RenderRange(%d, %d): %v", rg[0], rg[1], err)
		}
		if !bytes.Equal(out.Bytes(), nar[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("RenderRange(%d, %d): %d bytes differ from the NAR's slice", rg[0], rg[1], out.Len())
		}
	}
	if err := narrender.RenderRange(ctx, io.Discard, s, root, n-1, 2); !errors.Is(err, castore.ErrInvalid) {
		t.Errorf("range past the end: %v, want ErrInvalid", err)
	}
}

// TestRenderRangeSkipsFiles: a range at the end of a NAR reads no chunk of
// the files before it, and a small file costs no blob index look-up.
func TestRenderRangeSkipsFiles(t *testing.T) {
	ctx := context.Background()
	tree := testtree.Dir(testtree.Entries{
		"a": testtree.File(testtree.Random(1, 200_000)),
		"b": testtree.File(testtree.Random(2, 200_000)),
		"c": testtree.File(testtree.Text("last\n")),
	})
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, tree); err != nil {
		t.Fatal(err)
	}
	mem := new(castore.MemoryStore)
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar.Bytes()), mem, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &countingStore{MemoryStore: mem}
	tail := uint64(200)
	var out bytes.Buffer
	if err := narrender.RenderRange(ctx, &out, s, res.Root, uint64(nar.Len())-tail, tail); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), nar.Bytes()[uint64(nar.Len())-tail:]) {
		t.Fatal("tail differs")
	}
	if c, i := s.chunks.Load(), s.indexes.Load(); c != 1 || i != 0 {
		t.Errorf("rendering the tail read %d chunks and %d blob indexes, want 1 and 0 (a small file is its chunk)", c, i)
	}
}

type countingStore struct {
	*castore.MemoryStore
	chunks, indexes atomic.Int64
}

func (c *countingStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	c.chunks.Add(1)
	return c.MemoryStore.GetChunk(ctx, d, dst)
}

func (c *countingStore) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	c.indexes.Add(1)
	return c.MemoryStore.GetBlobIndex(ctx, d)
}
