package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server"
)

// TestBackgroundCompaction: a server with --compact-idle compacts once no
// chunk has arrived for that long, incrementally: with a fan-out of 2, the
// first compaction rewrites the first batch of chunks, the second the
// second batch and, merging, the first again (the metrics count both runs
// and exactly those bytes); the store, reopened, has no hot frame left and
// reads every chunk.
func TestBackgroundCompaction(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	srv, stop := start(t, server.Options{
		DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Pebble:  pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Size: 64 << 10}},
		Compact: server.CompactPolicy{Idle: time.Second, FanOut: 2},
	})
	conn := dial(t, srv.GRPCAddr().String(), nil)
	var chunks [][]byte
	var batches [2]int
	for batch := range batches {
		for i := 40 * batch; i < 40*(batch+1); i++ {
			var b bytes.Buffer
			for b.Len() < 16<<10 {
				fmt.Fprintf(&b, "chunk %d of a file that changes little: line %d\n", i%8, b.Len()/40+i)
			}
			chunks = append(chunks, b.Bytes())
			batches[batch] += b.Len()
			if err := putChunk(ctx, conn, "", b.Bytes()); err != nil {
				t.Fatal(err)
			}
		}
		want := fmt.Sprintf("nixcas_compactions_total %d\n", batch+1)
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(get(t, "http://"+srv.HTTPAddr().String()+"/metrics"), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no background compaction within a minute of the last write of batch %d", batch+1)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	metrics := get(t, "http://"+srv.HTTPAddr().String()+"/metrics")
	if want := fmt.Sprintf("nixcas_compaction_rewritten_bytes_total %g\n", float64(2*batches[0]+batches[1])); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %q (the first batch twice, the second once):\n%s", want, metrics)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s, err := pebblestore.Open(dir, pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if due, err := s.CompactDue(ctx, pebblestore.CompactOptions{}); err != nil || due {
		t.Errorf("CompactDue after the background compaction = %v, %v; want no hot frame left", due, err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Frames == 0 || st.Chunks != uint64(len(chunks)) {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	for _, c := range chunks {
		got, err := s.GetChunk(ctx, castore.Hash(c), nil)
		if err != nil || !bytes.Equal(got, c) {
			t.Fatalf("GetChunk after compaction: %d bytes, %v", len(got), err)
		}
	}
}

// crashingObjects is a store's frame files whose syncs fail once crash is
// set: a compaction then stops after writing a frame and before switching
// any chunk to it, as a crash there would leave the store.
type crashingObjects struct {
	*pebblestore.DirObjects
	crash atomic.Bool
}

func (o *crashingObjects) SyncObjects(ctx context.Context) error {
	if o.crash.Load() {
		return errors.New("simulated crash before the switch")
	}
	return o.DirObjects.SyncObjects(ctx)
}

// TestBackgroundCompactionResumesMerge: a merge (a run of level 0 and new
// chunks into level 1) stopped after writing its frames and before the
// switch is taken up by a server started on the store with --compact-idle,
// although no chunk arrives and the hot frames are younger than
// --compact-older-than: once idle, it compacts once, rewriting every chunk
// into one run of level 1, and finds nothing more to do.
func TestBackgroundCompactionResumesMerge(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	popts := pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Size: 64 << 10}}
	objects := &crashingObjects{DirObjects: pebblestore.NewDirObjects(filepath.Join(dir, "frames"))}
	crashing := popts
	crashing.Objects = objects
	s, err := pebblestore.Open(dir, crashing)
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	var total int
	for batch := range 2 {
		for i := 40 * batch; i < 40*(batch+1); i++ {
			var b bytes.Buffer
			for b.Len() < 16<<10 {
				fmt.Fprintf(&b, "chunk %d of a file that changes little: line %d\n", i%8, b.Len()/40+i)
			}
			chunks = append(chunks, b.Bytes())
			total += b.Len()
			if _, err := s.PutChunk(ctx, castore.NewChunk(b.Bytes())); err != nil {
				t.Fatal(err)
			}
		}
		if batch == 0 {
			if _, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	objects.crash.Store(true)
	if _, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2}); err == nil {
		t.Fatal("the merge did not stop at the simulated crash")
	}
	objects.crash.Store(false)
	s.Close()

	srv, stop := start(t, server.Options{
		DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Pebble: popts,
		Compact: server.CompactPolicy{Idle: time.Second, OlderThan: time.Hour, FanOut: 2},
	})
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(get(t, "http://"+srv.HTTPAddr().String()+"/metrics"), "nixcas_compactions_total 1\n") {
		if time.Now().After(deadline) {
			t.Fatal("the interrupted merge was not taken up within a minute of the start")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // two more checks for work: there must be none
	metrics := get(t, "http://"+srv.HTTPAddr().String()+"/metrics")
	for _, want := range []string{"nixcas_compactions_total 1\n", fmt.Sprintf("nixcas_compaction_rewritten_bytes_total %g\n", float64(total))} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q (one compaction, every chunk once):\n%s", want, metrics)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	s, err = pebblestore.Open(dir, popts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if due, err := s.CompactDue(ctx, pebblestore.CompactOptions{FanOut: 2}); err != nil || due {
		t.Errorf("CompactDue after the resumed merge = %v, %v; want nothing left", due, err)
	}
	dry, err := s.Compact(ctx, pebblestore.CompactOptions{FanOut: 2, DryRun: true})
	if err != nil || dry.Into != nil {
		t.Errorf("dry run after the resumed merge = %+v, %v; want nothing to do", dry, err)
	}
	for _, c := range chunks {
		if got, err := s.GetChunk(ctx, castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
			t.Fatalf("GetChunk after the resumed merge: %d bytes, %v", len(got), err)
		}
	}
}
