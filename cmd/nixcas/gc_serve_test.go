package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestServeGCWhilePushing runs `nixcas serve --gc-interval 50ms` while
// eight `nixcas push` processes push overlapping trees, twice over (the
// second round deduplicates against the first): every push succeeds and
// every tree pulls back with the NAR hash Nix computes, although no store
// path refers to any of them: they are kept by the use records of the
// grace period. Once the server is stopped, `nixcas gc` with the default
// grace deletes nothing, and with no grace deletes every chunk.
func TestServeGCWhilePushing(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	const n = 8
	dir := t.TempDir()
	data := filepath.Join(dir, "server")
	srv := startGRPCServe(t, data, "--gc-interval", "50ms")
	srcs, wants := buildConcurrentTrees(t, filepath.Join(dir, "src"), 2*n)
	roots := make([]json.RawMessage, 2*n)
	for round := range 2 {
		results := runConcurrently(t, n, func(i int) []string {
			return []string{"push", "--json", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, fmt.Sprintf("cache-%d-%d", round, i)), srcs[round*n+i]}
		})
		for i, res := range results {
			if res.Err != nil {
				t.Fatalf("push %d of round %d: %v\n%s", i, round, res.Err, res.Stderr)
			}
			var out grpcPushOutput
			if err := json.Unmarshal(res.Stdout, &out); err != nil || out.NARHash != wants[round*n+i] {
				t.Fatalf("push %d of round %d: output %q (%v), want NAR hash %s", i, round, res.Stdout, err, wants[round*n+i])
			}
			roots[round*n+i] = out.Root
		}
	}
	runs := gcMetric(t, srv.httpAddr, "nixcas_gc_runs_total")
	t.Logf("%g collections ran", runs)
	if runs < 1 {
		t.Fatal("no background collection ran")
	}
	if failed := gcMetric(t, srv.httpAddr, "nixcas_gc_failures_total"); failed != 0 {
		t.Fatalf("%g background collections failed", failed)
	}
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, root := range roots {
		to := filepath.Join(dir, "out", strconv.Itoa(i))
		e2eInvocation{Args: []string{"pull", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "pull-cache"), "--root", string(root), "--to", to}}.mustSucceed(t)
		if got := grpcNixHash(t, to); got != wants[i] {
			t.Errorf("tree %d pulled back hashes to %s, want %s", i, got, wants[i])
		}
	}
	srv.stop(t)

	kept := gcRun(t, "--data", data)
	if kept.ChunksDeleted+kept.DirectoriesDeleted+kept.BlobsDeleted != 0 || kept.UseRecords == 0 {
		t.Errorf("gc within the grace period: %+v", kept.GCResult)
	}
	gone := gcRun(t, "--data", data, "--grace", "0s")
	st := (&e2eStore{dir: data}).stats(t)
	if gone.ChunksDeleted == 0 || st.Chunks != 0 || st.Directories != 0 || st.Blobs != 0 {
		t.Errorf("gc without grace: %+v; stats after %+v", gone.GCResult, st)
	}
}

// gcMetric reads one unlabelled metric from a server's /metrics.
func gcMetric(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
