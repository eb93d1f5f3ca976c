package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
)

// benchNAR returns the NAR the benchmarks use: nix-store --dump of the tree
// in $NIXCAS_BENCH_TREE, or else a synthetic NAR of files of random and of
// repetitive content.
//
// A tree's NAR is read once per process and shared (never modified): a
// benchmark function runs several times, and on this kind of machine
// reading 200 MB into fresh memory costs about a second of page faults
// (in one non-preemptible clear, which stalls the garbage collector
// meanwhile), which would land in the profiles of what is measured.
func benchNAR(b *testing.B) []byte {
	if tree := os.Getenv("NIXCAS_BENCH_TREE"); tree != "" {
		treeNAR.once.Do(func() {
			treeNAR.nar, treeNAR.err = exec.Command("nix-store", "--dump", tree).Output()
		})
		if treeNAR.err != nil {
			b.Fatalf("nix-store --dump %s: %v", tree, treeNAR.err)
		}
		return treeNAR.nar
	}
	dir := b.TempDir()
	for i := range 64 {
		data := make([]byte, (i+1)*37_000)
		for j := range data {
			data[j] = byte(j*i) ^ byte(j>>7)
		}
		if i%2 == 0 {
			castoreRandom(data, uint64(i))
		}
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i%26))+string(rune('a'+i/26))), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	out, err := exec.Command("nix-store", "--dump", dir).Output()
	if err != nil {
		b.Fatalf("nix-store --dump: %v", err)
	}
	return out
}

// treeNAR is the NAR of $NIXCAS_BENCH_TREE, once read.
var treeNAR struct {
	once sync.Once
	nar  []byte
	err  error
}

func castoreRandom(b []byte, seed uint64) {
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

func BenchmarkIngest(b *testing.B) {
	nar := benchNAR(b)
	b.SetBytes(int64(len(nar)))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := pebblestore.Open(filepath.Join(b.TempDir(), "s"), pebblestore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkRender renders from a store at rest, as a server has: its
// decoded frames kept in memory and on disk after the first render.
func BenchmarkRender(b *testing.B) { benchmarkRender(b, pebblestore.Options{}) }

// BenchmarkRenderDecoding renders from a store that keeps no decoded
// frame on disk and fewer in memory (64 MiB) than the NAR has: every
// render decodes every frame, as a first render does (without writing
// them out).
func BenchmarkRenderDecoding(b *testing.B) {
	benchmarkRender(b, pebblestore.Options{Frames: pebblestore.FrameOptions{DecodedCacheSize: -1}})
}

// ingestedStore opens a store in dir with opts and ingests the bench NAR
// into it, flushed, returning the store, the NAR's root and its size.
func ingestedStore(b *testing.B, dir string, opts pebblestore.Options) (*pebblestore.Store, castore.Entry, int) {
	nar := benchNAR(b)
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	res, err := narrender.Ingest(b.Context(), bytes.NewReader(nar), s, castore.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Flush(b.Context()); err != nil {
		b.Fatal(err)
	}
	return s, res.Root, len(nar)
}

// benchmarkRender renders the bench NAR, ingested and flushed, from a
// store opened with opts.
func benchmarkRender(b *testing.B, opts pebblestore.Options) {
	s, root, size := ingestedStore(b, filepath.Join(b.TempDir(), "s"), opts)
	defer s.Close()
	renderTimed(b, s, root, size)
}

// renderTimed renders root from s b.N times, timed, size bytes each.
func renderTimed(b *testing.B, s *pebblestore.Store, root castore.Entry, size int) {
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := narrender.Render(context.Background(), io.Discard, s, root); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRenderFirst renders as a server does the first time it serves
// a NAR: from a store just reopened, with no decoded frame on disk or in
// memory, keeping the frames it decodes on disk as it goes. The decoded
// files are removed before each render; the time counts the render, not
// the writes still queued when it ends.
func BenchmarkRenderFirst(b *testing.B) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "s")
	decoded := filepath.Join(b.TempDir(), "decoded")
	opts := pebblestore.Options{Frames: pebblestore.FrameOptions{DecodedCacheDir: decoded}}
	s, root, size := ingestedStore(b, dir, opts)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s.Close()
		if err := os.RemoveAll(decoded); err != nil {
			b.Fatal(err)
		}
		var err error
		if s, err = pebblestore.Open(dir, opts); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := narrender.Render(ctx, io.Discard, s, root); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st := s.DecodedCacheStats()
	s.Close()
	b.ReportMetric(float64(st.Writes), "kept/op")
}

// BenchmarkRenderWarm renders from a store at rest whose decoded frames
// the first render kept on disk (reopened, so none is in memory): what a
// server renders once it has served a NAR before.
func BenchmarkRenderWarm(b *testing.B) {
	ctx := context.Background()
	dir := filepath.Join(b.TempDir(), "s")
	s, root, size := ingestedStore(b, dir, pebblestore.Options{})
	if err := narrender.Render(ctx, io.Discard, s, root); err != nil {
		b.Fatal(err)
	}
	s.Close() // waits for the decoded frames to be written
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	renderTimed(b, s, root, size)
	b.StopTimer()
	if st := s.DecodedCacheStats(); st.Misses != 0 {
		b.Fatalf("warm renders decoded frames: %+v", st)
	}
}
