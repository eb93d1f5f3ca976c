package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreStatsServer: `store stats --server` of a running server gives
// the figures `store stats --data` gives of the same store once the
// server has stopped (disk bytes aside: closing flushes the memtable).
func TestStoreStatsServer(t *testing.T) {
	t.Parallel()
	s := newE2EStore(t)
	srv := startGRPCServe(t, s.dir)
	tree := t.TempDir()
	data := make([]byte, 300<<10)
	rand.NewChaCha8([32]byte{7}).Read(data)
	for name, b := range map[string][]byte{"big": data, "small": []byte("hello\n"), "sub/again": data} {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	push := e2eInvocation{Args: []string{"push", "--server", srv.grpcAddr, "--cache", t.TempDir(), tree}, Timeout: 2 * time.Minute}.run(t)
	if push.Err != nil {
		t.Fatalf("push: %v\n%s", push.Err, push.Stderr)
	}
	live := e2eInvocation{Args: []string{"store", "stats", "--server", "http://" + srv.httpAddr, "--json"}, Timeout: time.Minute}.run(t)
	if live.Err != nil {
		t.Fatalf("store stats --server: %v\n%s", live.Err, live.Stderr)
	}
	bad := e2eInvocation{Args: []string{"store", "stats", "--server", srv.grpcAddr}, Timeout: time.Minute}.run(t)
	if bad.Err == nil || !strings.Contains(bad.Stderr, "http://HOST:PORT") {
		t.Errorf("store stats --server without a scheme: %v\n%s", bad.Err, bad.Stderr)
	}
	srv.stop(t)
	rest := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json"}, Timeout: time.Minute}.run(t)
	if rest.Err != nil {
		t.Fatalf("store stats --data: %v\n%s", rest.Err, rest.Stderr)
	}
	var a, b map[string]int64
	if err := json.Unmarshal(live.Stdout, &a); err != nil {
		t.Fatalf("%v: %s", err, live.Stdout)
	}
	if err := json.Unmarshal(rest.Stdout, &b); err != nil {
		t.Fatalf("%v: %s", err, rest.Stdout)
	}
	if a["chunks"] == 0 || a["diskBytes"] == 0 {
		t.Errorf("store stats --server: %s, want chunks and disk bytes", live.Stdout)
	}
	for _, k := range []string{"logicalBytes", "uniqueChunkBytes", "storedBytes", "chunks", "blobs", "directories"} {
		if a[k] != b[k] {
			t.Errorf("%s: %d through the server, %d from the store at rest", k, a[k], b[k])
		}
	}

	// A pushed directory is no store path: nothing refers to its chunks.
	unref := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json", "--unreferenced"}, Timeout: time.Minute}.run(t)
	var u map[string]int64
	if unref.Err != nil || json.Unmarshal(unref.Stdout, &u) != nil {
		t.Fatalf("store stats --unreferenced: %v\n%s%s", unref.Err, unref.Stdout, unref.Stderr)
	}
	if u["unreferencedChunks"] != b["chunks"] || u["unreferencedChunkBytes"] != b["uniqueChunkBytes"] {
		t.Errorf("store stats --unreferenced: %s; want every chunk (%d, %d bytes) unreferenced", unref.Stdout, b["chunks"], b["uniqueChunkBytes"])
	}
}
