package narrender_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// FuzzIngestRender: any input is either refused with a format error, or
// ingested and rendered back to exactly the same bytes. Nothing panics and
// nothing is allocated by a length that was not read.
func FuzzIngestRender(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join(refsDir, "*.nar"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	ctx := context.Background()
	opts := castore.WriterOptions{Chunker: castore.ChunkerOptions{MinSize: 64, AvgSize: 256, MaxSize: 1024}, Workers: 1}
	f.Fuzz(func(t *testing.T, nar []byte) {
		s := new(castore.MemoryStore)
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, opts)
		if err != nil {
			if !errors.Is(err, narrender.ErrFormat) {
				t.Fatalf("error not wrapping ErrFormat: %v", err)
			}
			return
		}
		if res.NARSize != uint64(len(nar)) {
			t.Fatalf("NAR size %d, input %d bytes", res.NARSize, len(nar))
		}
		var out bytes.Buffer
		if err := narrender.Render(ctx, &out, s, res.Root); err != nil {
			t.Fatalf("render: %v", err)
		}
		if !bytes.Equal(out.Bytes(), nar) {
			t.Fatalf("render(ingest(nar)) differs from nar")
		}
	})
}

// TestLongSymlinkTarget: targets up to the limit are read; longer ones are
// refused.
func TestLongSymlinkTarget(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{castore.MaxTargetLen - 1, castore.MaxTargetLen, castore.MaxTargetLen + 1} {
		target := string(bytes.Repeat([]byte("a/"), n)[:n])
		var nar []byte
		for _, s := range []string{"nix-archive-1", "(", "type", "symlink", "target", target, ")"} {
			nar = appendNARString(nar, s)
		}
		s := new(castore.MemoryStore)
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
		if n > castore.MaxTargetLen {
			if !errors.Is(err, narrender.ErrFormat) {
				t.Errorf("target of %d bytes: error %v, want a format error", n, err)
			}
			continue
		}
		if err != nil || res.Root.Target != target {
			t.Errorf("target of %d bytes: %v, target %d bytes", n, err, len(res.Root.Target))
		}
	}
}

func appendNARString(b []byte, s string) []byte {
	var n [8]byte
	for i := range 8 {
		n[i] = byte(uint64(len(s)) >> (8 * i))
	}
	b = append(append(b, n[:]...), s...)
	return append(b, make([]byte, (8-len(s)%8)%8)...)
}
