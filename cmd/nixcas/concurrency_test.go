package main

// End-to-end tests of client processes running side by side on one chunk
// cache: the real binary, a real server over loopback.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/internal/testtree"
)

// buildConcurrentTrees builds the n trees of concurrentTrees under dir
// (named 0 to n-1) and returns their paths and the NAR hashes Nix gives
// them.
func buildConcurrentTrees(t *testing.T, dir string, n int) (srcs, hashes []string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, tree := range concurrentTrees(n) {
		src := filepath.Join(dir, strconv.Itoa(i))
		testtree.Build(t, src, tree)
		srcs, hashes = append(srcs, src), append(hashes, grpcNixHash(t, src))
	}
	return srcs, hashes
}

// concurrentTrees returns n trees that overlap: all share one package,
// neighbours share a file, and each has a file of its own.
func concurrentTrees(n int) []*testtree.Node {
	shared := testtree.Dir(testtree.Entries{
		"bin":  testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Mixed(1, 700<<10))}),
		"lib":  testtree.Dir(testtree.Entries{"data": testtree.File(testtree.Random(2, 300<<10)), "link": testtree.Link("data")}),
		"doc":  testtree.File(testtree.Text("shared\n")),
		"none": testtree.Dir(nil),
	})
	trees := make([]*testtree.Node, n)
	for i := range trees {
		trees[i] = testtree.Dir(testtree.Entries{
			"shared": shared,
			"pair":   testtree.File(testtree.Random(uint64(100+i/2), 200<<10)),
			"own":    testtree.Exec(testtree.Mixed(uint64(1000+i), 90<<10)),
			"name":   testtree.File(testtree.Text(fmt.Sprintf("tree %d\n", i))),
		})
	}
	return trees
}

// TestConcurrentPushProcesses runs 16 push processes at once on one chunk
// cache, of overlapping trees to one server, then 16 pulls at once on
// another shared cache: every process succeeds and every tree comes back
// with the NAR hash Nix computes for the original.
func TestConcurrentPushProcesses(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	const n = 16
	dir := t.TempDir()
	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	trees := concurrentTrees(n)
	for _, d := range []string{"src", "out"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srcs := make([]string, n)
	wants := make([]string, n)
	for i, tree := range trees {
		srcs[i] = filepath.Join(dir, "src", strconv.Itoa(i))
		testtree.Build(t, srcs[i], tree)
		wants[i] = grpcNixHash(t, srcs[i])
	}

	pushCache := filepath.Join(dir, "push-cache")
	results := runConcurrently(t, n, func(i int) []string {
		return []string{"push", "--json", "--server", srv.grpcAddr, "--cache", pushCache, srcs[i]}
	})
	roots := make([]json.RawMessage, n)
	private := 0
	for i, res := range results {
		if res.Err != nil {
			t.Fatalf("push %d: %v\n%s", i, res.Err, res.Stderr)
		}
		var out grpcPushOutput
		if err := json.Unmarshal(res.Stdout, &out); err != nil {
			t.Fatalf("push %d output %q: %v", i, res.Stdout, err)
		}
		if out.NARHash != wants[i] {
			t.Errorf("push %d: NAR hash %s, want %s", i, out.NARHash, wants[i])
		}
		roots[i] = out.Root
		if strings.Contains(res.Stderr, "private chunk cache") {
			private++
		}
	}
	t.Logf("%d of %d pushes used a private cache", private, n)
	checkNoPrivateCaches(t, pushCache)

	pullCache := filepath.Join(dir, "pull-cache")
	results = runConcurrently(t, n, func(i int) []string {
		return []string{"pull", "--json", "--server", srv.grpcAddr, "--cache", pullCache, "--root", string(roots[i]), "--to", filepath.Join(dir, "out", strconv.Itoa(i))}
	})
	for i, res := range results {
		if res.Err != nil {
			t.Fatalf("pull %d: %v\n%s", i, res.Err, res.Stderr)
		}
		var out grpcPullOutput
		if err := json.Unmarshal(res.Stdout, &out); err != nil || out.NARHash != wants[i] || string(out.Root) != string(roots[i]) {
			t.Errorf("pull %d output %q (%v), want root %s and NAR hash %s", i, res.Stdout, err, roots[i], wants[i])
		}
		if got := grpcNixHash(t, filepath.Join(dir, "out", strconv.Itoa(i))); got != wants[i] {
			t.Errorf("tree %d pulled back hashes to %s, want %s", i, got, wants[i])
		}
	}
	checkNoPrivateCaches(t, pullCache)
}

// runConcurrently starts n nixcas processes at once, the i-th with
// args(i), and returns their results.
func runConcurrently(t *testing.T, n int, args func(i int) []string) []e2eResult {
	t.Helper()
	results := make([]e2eResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = e2eInvocation{Args: args(i), Timeout: 3 * time.Minute}.run(t)
		})
	}
	wg.Wait()
	return results
}

// checkNoPrivateCaches fails if a private cache beside cache was left.
func checkNoPrivateCaches(t *testing.T, cache string) {
	t.Helper()
	left, err := filepath.Glob(cache + ".private-*")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("private caches left behind: %v", left)
	}
}

// startProxyProcess starts `nixcas proxy` on cache and waits until it has
// the cache open; it is killed when the test ends.
func startProxyProcess(t *testing.T, upstream, cache string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(e2eBinary, "proxy", "--upstream", upstream, "--listen-http", "127.0.0.1:0", "--cache", cache)
	cmd.Env = e2eEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stderr).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		if !strings.Contains(s, "proxy of") {
			t.Fatalf("nixcas proxy: %s", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nixcas proxy did not start within 30 s")
	}
	return cmd
}

// TestPushWhileProxyHoldsCache pushes and pulls with the chunk cache a
// running proxy has open: both work, through a private cache, and say
// which process holds the cache. Commands that need the store itself
// refuse, naming the process and the directory.
func TestPushWhileProxyHoldsCache(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	cache := filepath.Join(dir, "cache")
	proxy := startProxyProcess(t, srv.grpcAddr, cache)
	holder := fmt.Sprintf("process %d (%s proxy", proxy.Process.Pid, e2eBinary)

	src := filepath.Join(dir, "src")
	testtree.Build(t, src, concurrentTrees(1)[0])
	want := grpcNixHash(t, src)
	res := e2eInvocation{Args: []string{"push", "--json", "--server", srv.grpcAddr, "--cache", cache, src}, Timeout: 2 * time.Minute}.run(t)
	if res.Err != nil {
		t.Fatalf("push beside the proxy: %v\n%s", res.Err, res.Stderr)
	}
	for _, s := range []string{cache, holder, "private chunk cache"} {
		if !strings.Contains(res.Stderr, s) {
			t.Errorf("push's note %q does not say %q", res.Stderr, s)
		}
	}
	var out grpcPushOutput
	if err := json.Unmarshal(res.Stdout, &out); err != nil || out.NARHash != want {
		t.Fatalf("push output %q (%v), want NAR hash %s", res.Stdout, err, want)
	}
	res = e2eInvocation{Args: []string{"pull", "--server", srv.grpcAddr, "--cache", cache, "--root", string(out.Root), "--to", filepath.Join(dir, "out")}}.run(t)
	if res.Err != nil {
		t.Fatalf("pull beside the proxy: %v\n%s", res.Err, res.Stderr)
	}
	if got := grpcNixHash(t, filepath.Join(dir, "out")); got != want {
		t.Errorf("pulled tree hashes to %s, want %s", got, want)
	}
	checkNoPrivateCaches(t, cache)

	// The proxy's cache as a store: refused, naming pid and directory,
	// without Pebble's own text.
	res = e2eInvocation{Args: []string{"store", "stats", "--data", cache}}.run(t)
	if res.Err == nil {
		t.Fatal("store stats of a store the proxy holds succeeded")
	}
	for _, s := range []string{cache, holder, "store in use"} {
		if !strings.Contains(res.Stderr, s) {
			t.Errorf("error %q does not say %q", res.Stderr, s)
		}
	}
	if bytes.Contains([]byte(res.Stderr), []byte("resource temporarily unavailable")) {
		t.Errorf("error %q passes Pebble's text through", res.Stderr)
	}
}
