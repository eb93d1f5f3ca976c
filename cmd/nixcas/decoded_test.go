package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeDecodedCache: `serve --decoded-cache-size` keeps the frames it
// decodes for reads on disk under DATA/decoded; `store stats --server`
// shows them with the hits and misses, `store stats --data` the same files
// once the server stopped; pulls read the same bytes before and after;
// `--decoded-cache-size 0` keeps none.
func TestServeDecodedCache(t *testing.T) {
	t.Parallel()
	if !strings.Contains(string(e2eInvocation{Args: []string{"serve", "--help"}}.mustSucceed(t).Stdout), "--decoded-cache-size") {
		t.Fatal("serve --help does not list --decoded-cache-size")
	}
	for _, tc := range []struct {
		name string
		size string
		keep bool
	}{
		{"64M", "64M", true},
		{"off", "0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newE2EStore(t)
			srv := startGRPCServe(t, s.dir, "--decoded-cache-size", tc.size, "--hot-frame-size", "1M")
			tree := t.TempDir()
			data := make([]byte, 3<<20) // three hot frames and some
			rand.NewChaCha8([32]byte{9}).Read(data)
			if err := os.WriteFile(filepath.Join(tree, "big"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			var out grpcPushOutput
			push := e2eInvocation{Args: []string{"push", "--json", "--server", srv.grpcAddr, "--cache", t.TempDir(), tree}, Timeout: 2 * time.Minute}.mustSucceed(t)
			if err := json.Unmarshal(push.Stdout, &out); err != nil {
				t.Fatalf("push output %q: %v", push.Stdout, err)
			}
			stats := func() map[string]int64 {
				t.Helper()
				res := e2eInvocation{Args: []string{"store", "stats", "--server", "http://" + srv.httpAddr, "--json"}, Timeout: time.Minute}.mustSucceed(t)
				var m map[string]int64
				if err := json.Unmarshal(res.Stdout, &m); err != nil {
					t.Fatalf("%v: %s", err, res.Stdout)
				}
				return m
			}
			// The packer writes the frames behind the push.
			deadline := time.Now().Add(time.Minute)
			for stats()["frames"] < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no frames packed: %v", stats())
				}
				time.Sleep(100 * time.Millisecond)
			}
			pull := func() {
				t.Helper()
				to := filepath.Join(t.TempDir(), "out")
				// Chunk by chunk, so that the server reads (and decodes)
				// every frame itself rather than sending it as stored.
				e2eInvocation{Args: []string{"pull", "--whole-frames=false", "--server", srv.grpcAddr, "--cache", t.TempDir(), "--root", string(out.Root), "--to", to}, Timeout: 2 * time.Minute}.mustSucceed(t)
				if got, err := os.ReadFile(filepath.Join(to, "big")); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("pull: %d bytes, %v; want the file pushed", len(got), err)
				}
			}
			pull()
			live := stats()
			if _, ok := live["decodedCacheHits"]; !ok {
				t.Fatalf("store stats --server has no decoded cache hits: %v", live)
			}
			if tc.keep {
				// The decoded frames are written behind the reads.
				for live["decodedCacheFiles"] < live["frames"] {
					if time.Now().After(deadline) {
						t.Fatalf("decoded frames not kept: %v", live)
					}
					time.Sleep(100 * time.Millisecond)
					live = stats()
				}
				if live["decodedCacheMisses"] < live["frames"] || live["decodedCacheBytes"] < 2<<20 {
					t.Fatalf("after a pull, store stats --server: %v; want every frame decoded and kept", live)
				}
			}
			srv.stop(t)
			rest := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json"}, Timeout: time.Minute}.mustSucceed(t)
			var atRest map[string]int64
			if err := json.Unmarshal(rest.Stdout, &atRest); err != nil {
				t.Fatalf("%v: %s", err, rest.Stdout)
			}
			if atRest["decodedCacheFiles"] != live["decodedCacheFiles"] || atRest["decodedCacheBytes"] != live["decodedCacheBytes"] {
				t.Fatalf("store stats --data: %v; the server said %v", atRest, live)
			}

			// A restarted server reads the frames kept, decoding none.
			srv = startGRPCServe(t, s.dir, "--decoded-cache-size", tc.size)
			pull()
			again := stats()
			srv.stop(t)
			if !tc.keep {
				if again["decodedCacheFiles"] != 0 || again["decodedCacheHits"] != 0 || atRest["decodedCacheFiles"] != 0 {
					t.Fatalf("--decoded-cache-size 0 kept decoded frames: %v, then %v", live, again)
				}
				return
			}
			if again["decodedCacheMisses"] != 0 || again["decodedCacheHits"] == 0 {
				t.Fatalf("pull from a restarted server: %v; want every chunk read from a decoded frame kept", again)
			}
		})
	}
}
