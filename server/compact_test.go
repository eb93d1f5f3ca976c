package server_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
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
