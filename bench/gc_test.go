package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/store"
)

// collectInProcess is GCOptions.Collect without a child process (no RSS).
func collectInProcess(ctx context.Context, dir string) (store.GCResult, int64, error) {
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return store.GCResult{}, 0, err
	}
	defer s.Close()
	res, err := store.NewIndex(s, s).GC(ctx, s, pebblestore.GCOptions{RewriteBelow: 0.5})
	return res, 0, err
}

// TestGCBenchSmoke runs the benchmark on four small NARs (the last with
// two simulated rebuilds) and on a small synthetic store: the collection
// frees exactly the ideal, found independently.
func TestGCBenchSmoke(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	var inputs []DedupInput
	for i := range 4 {
		path := filepath.Join(work, fmt.Sprintf("in-%d.nar", i))
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		err = testtree.WriteNAR(f, testtree.Dir(testtree.Entries{
			"bin":    testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Mixed(uint64(i), 600<<10))}),
			"shared": testtree.File(testtree.Random(7, 300<<10)),
			"own":    testtree.File(testtree.Random(uint64(10+i), 200<<10)),
		}))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, DedupInput{Name: fmt.Sprintf("pkg-%d", i), Path: path})
	}
	res, err := GC(ctx, GCOptions{Inputs: inputs, RebuildSim: 2, WorkDir: work, Collect: collectInProcess})
	if err != nil {
		t.Fatal(err)
	}
	if res.Paths != 6 || res.PathsDeleted != 3 {
		t.Errorf("%d paths, %d deleted; want 6 and 3", res.Paths, res.PathsDeleted)
	}
	if res.GC.ChunksDeleted != res.IdealChunks || res.GC.ChunkBytesFreed != res.IdealChunkBytes || res.IdealChunks == 0 {
		t.Errorf("freed %d chunks of %d bytes; the ideal is %d of %d", res.GC.ChunksDeleted, res.GC.ChunkBytesFreed, res.IdealChunks, res.IdealChunkBytes)
	}
	if res.After.Chunks != res.Before.Chunks-res.IdealChunks {
		t.Errorf("chunks %d before, %d after, ideal %d", res.Before.Chunks, res.After.Chunks, res.IdealChunks)
	}

	syn, err := GC(ctx, GCOptions{Synthetic: 5001, WorkDir: t.TempDir(), Collect: collectInProcess})
	if err != nil {
		t.Fatal(err)
	}
	if syn.Before.Chunks != 5001 || syn.After.Chunks != 2501 || syn.GC.ChunksDeleted != 2500 {
		t.Errorf("synthetic: %d chunks before, %d after, %d deleted; want 5001, 2501, 2500", syn.Before.Chunks, syn.After.Chunks, syn.GC.ChunksDeleted)
	}
}
