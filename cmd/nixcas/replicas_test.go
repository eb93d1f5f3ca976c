package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
)

// replicaPair starts two `nixcas serve` as two machines would run them:
// records in one fresh PostgreSQL database (--meta), frames in one MinIO
// bucket (--blobs), and a data directory of their own each (the local
// frame cache), with extra arguments for the first and the second.
func replicaPair(t *testing.T, dir string, first, second []string) (*grpcServe, *grpcServe) {
	t.Helper()
	meta := testpg.New(t)
	m := testminio.Start(t)
	shared := []string{"--meta", meta, "--blobs", m.URL("frames", "")}
	r1 := startGRPCServe(t, filepath.Join(dir, "data-1"), append(shared, first...)...)
	r2 := startGRPCServe(t, filepath.Join(dir, "data-2"), append(shared, second...)...)
	t.Cleanup(func() {
		if t.Failed() {
			for i, r := range []*grpcServe{r1, r2} {
				r.mu.Lock()
				t.Logf("server %d:\n%s", i+1, r.stderr.String())
				r.mu.Unlock()
			}
		}
	})
	return r1, r2
}

// alternating is an HTTP front that sends each request to the next of its
// backends in turn, as a load balancer would: a NAR and its narinfo put
// by one `nix copy` reach different servers.
func alternating(t *testing.T, backends ...string) string {
	t.Helper()
	var proxies []*httputil.ReverseProxy
	for _, b := range backends {
		u, err := url.Parse("http://" + b)
		if err != nil {
			t.Fatal(err)
		}
		proxies = append(proxies, httputil.NewSingleHostReverseProxy(u))
	}
	var next atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxies[int(next.Add(1))%len(proxies)].ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestReplicasNixCopy: two servers on one PostgreSQL database, each
// signing with the same key. Nix 2.8 copies a closure of three paths (a
// directory and two text files referring to it and to each other) to the
// first, then to both through a front that alternates between them (so a
// NAR and its narinfo reach different servers), and copies it back from
// the second with signatures checked against the key.
func TestReplicasNixCopy(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	keyDir := t.TempDir()
	sk, pk := filepath.Join(keyDir, "sk"), filepath.Join(keyDir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "replicas-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generating a key: %v\n%s", err, out)
	}
	pubKey, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := replicaPair(t, dir, []string{"--sign-key", sk}, []string{"--sign-key", sk})

	closure := func(nixStore, name string) (string, []string) {
		tree := filepath.Join(dir, "tree-"+name)
		testtree.Build(t, tree, grpcEdgeCase(t, "package-like"))
		if err := os.WriteFile(filepath.Join(tree, "which"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		dirPath := grpcNix(t, nixStore, "nix-store", "--add", tree)
		expr := fmt.Sprintf(`let d = builtins.storePath %q; b = builtins.toFile "b-%s" "uses ${d}\n"; in builtins.toFile "a-%s" "uses ${b} and ${d}\n"`, dirPath, name, name)
		top := strings.Trim(grpcNix(t, nixStore, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr), `"`)
		paths := strings.Fields(grpcNix(t, nixStore, "nix-store", "--query", "--requisites", top))
		if len(paths) != 3 {
			t.Fatalf("closure of %s: %v, want 3 paths", top, paths)
		}
		return top, paths
	}
	nixStore := filepath.Join(dir, "nix")
	front := alternating(t, r1.httpAddr, r2.httpAddr)
	for _, tc := range []struct{ name, to, from string }{
		{"one-to-other", r1.httpAddr, r2.httpAddr},
		{"alternating", front, front},
	} {
		top, paths := closure(nixStore, tc.name)
		grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "http://"+tc.to+"?compression=xz", top)
		other := filepath.Join(dir, "nix-"+tc.name)
		grpcNix(t, other, "nix", "--extra-experimental-features", "nix-command", "copy",
			"--option", "trusted-public-keys", strings.TrimSpace(string(pubKey)),
			"--from", "http://"+tc.from, top)
		for _, p := range paths {
			want := grpcNix(t, nixStore, "nix-store", "--query", "--hash", p)
			if got := grpcNix(t, other, "nix-store", "--query", "--hash", p); got != want {
				t.Errorf("%s: %s copied back has NAR hash %s, want %s", tc.name, p, got, want)
			}
		}
	}
}

// TestReplicasPushAndCollect: two servers on one database, the first
// collecting garbage every 50 ms with a grace period of 200 ms. Eight
// `nixcas push` processes at a time push overlapping directories,
// alternately to each server: garbage, since no store path refers to
// them. Once it is older than the grace period (the collections delete it
// meanwhile), eight more push store paths of trees that share most of it
// (so they deduplicate against what the collections are deleting), again
// alternately; every push succeeds and every store path pulls back from
// the other server with the NAR hash Nix computes.
func TestReplicasPushAndCollect(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	const n = 8
	dir := t.TempDir()
	r1, r2 := replicaPair(t, dir, []string{"--gc-interval", "50ms", "--gc-grace", "3s"}, nil)
	servers := []*grpcServe{r1, r2}
	srcs, wants := buildConcurrentTrees(t, filepath.Join(dir, "src"), 2*n)
	push := func(round int, args func(i int) string) []grpcPushOutput {
		results := runConcurrently(t, n, func(i int) []string {
			return []string{"push", "--json", "--server", servers[i%2].grpcAddr, "--cache", filepath.Join(dir, fmt.Sprintf("cache-%d-%d", round, i)),
				"--nix-store", filepath.Join(dir, "nix"), args(i)}
		})
		outs := make([]grpcPushOutput, n)
		for i, res := range results {
			if res.Err != nil {
				t.Fatalf("push %d of round %d: %v\n%s", i, round, res.Err, res.Stderr)
			}
			if err := json.Unmarshal(res.Stdout, &outs[i]); err != nil || outs[i].NARHash != wants[round*n+i] {
				t.Fatalf("push %d of round %d: output %q (%v), want NAR hash %s", i, round, res.Stdout, err, wants[round*n+i])
			}
		}
		return outs
	}
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	push(0, func(i int) string { return srcs[i] })
	paths := make([]string, n)
	for i := range n {
		paths[i] = grpcNix(t, filepath.Join(dir, "nix"), "nix-store", "--add", srcs[n+i])
	}
	before := gcMetric(t, r1.httpAddr, "nixcas_gc_runs_total")
	push(1, func(i int) string { return paths[i] })
	for i, p := range paths {
		to := filepath.Join(dir, "out", strconv.Itoa(i))
		e2eInvocation{Args: []string{"pull", "--server", servers[(i+1)%2].grpcAddr, "--cache", filepath.Join(dir, "pull-cache-"+strconv.Itoa(i)), p, "--to", to}}.mustSucceed(t)
		if got := grpcNixHash(t, to); got != wants[n+i] {
			t.Errorf("%s pulled back from the other server hashes to %s, want %s", p, got, wants[n+i])
		}
	}
	runs := gcMetric(t, r1.httpAddr, "nixcas_gc_runs_total")
	t.Logf("%g collections ran, %g of them from the store paths' pushes on", runs, runs-before)
	if runs-before < 1 {
		t.Fatal("no background collection ran while the store paths were pushed")
	}
	if failed := gcMetric(t, r1.httpAddr, "nixcas_gc_failures_total"); failed != 0 {
		t.Fatalf("%g background collections failed", failed)
	}
}

// TestReplicasKilledMidUpload (servers on one machine sharing one data
// directory for their frames): a NAR put to the first server, whose
// narinfo then goes to the second after the first is killed (SIGKILL),
// becomes a store path the second serves (the upload waited in the
// shared records, not in the dead server's memory); a NAR whose upload is
// cut by killing a server mid-stream leaves nothing visible, and the other
// server still serves every path, which Nix copies back with its NAR hash.
func TestReplicasKilledMidUpload(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	meta := testpg.New(t)
	data := filepath.Join(dir, "data")
	r1 := startGRPCServe(t, data, "--meta", meta)
	r2 := startGRPCServe(t, data, "--meta", meta)

	// A path as nix copy writes it to a file cache: its narinfo and NAR.
	nixStore := filepath.Join(dir, "nix")
	tree := filepath.Join(dir, "tree")
	testtree.Build(t, tree, concurrentTrees(1)[0])
	path := grpcNix(t, nixStore, "nix-store", "--add", tree)
	cache := filepath.Join(dir, "cache")
	grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "file://"+cache+"?compression=none", path)
	hash := filepath.Base(path)[:32]
	narinfo, err := os.ReadFile(filepath.Join(cache, hash+".narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	var narURL string
	for _, line := range strings.Split(string(narinfo), "\n") {
		if u, ok := strings.CutPrefix(line, "URL: "); ok {
			narURL = u
		}
	}
	nar, err := os.ReadFile(filepath.Join(cache, narURL))
	if err != nil {
		t.Fatal(err)
	}
	put := func(addr, name string, body []byte) int {
		return httpPut(t, "http://"+addr+"/"+name, body)
	}
	if code := put(r1.httpAddr, narURL, nar); code != http.StatusCreated {
		t.Fatalf("PUT %s to the first server: %d", narURL, code)
	}
	r1.cmd.Process.Kill()
	<-r1.done
	if code := put(r2.httpAddr, hash+".narinfo", narinfo); code != http.StatusCreated {
		t.Fatalf("PUT %s.narinfo to the second server, after the first took the NAR and was killed: %d", hash, code)
	}

	// A third server is killed halfway through a NAR of 24 MiB.
	r3 := startGRPCServe(t, data, "--meta", meta)
	big, err := os.ReadFile(killNAR(t, 7, 24<<20))
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPut, "http://"+r3.httpAddr+"/nar/cut.nar", pr)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the cut upload was answered %s", resp.Status)
		}
		sent <- err
	}()
	if _, err := pw.Write(big[:len(big)/2]); err != nil {
		t.Fatal(err)
	}
	r3.cmd.Process.Kill()
	<-r3.done
	pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-sent; err == nil {
		t.Fatal("the cut upload succeeded")
	}
	resp, err := http.Get("http://" + r2.httpAddr + "/nar/cut.nar")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET nar/cut.nar from the second server after the upload was cut: %s", resp.Status)
	}

	other := filepath.Join(dir, "nix2")
	grpcNix(t, other, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--from", "http://"+r2.httpAddr, path)
	want := grpcNix(t, nixStore, "nix-store", "--query", "--hash", path)
	if got := grpcNix(t, other, "nix-store", "--query", "--hash", path); got != want {
		t.Errorf("%s copied back from the second server has NAR hash %s, want %s", path, got, want)
	}
	r2.stop(t)
	// Every store path's data is there and sound.
	e2eInvocation{Args: []string{"verify", "--data", data, "--meta", meta, "--read-data"}}.mustSucceed(t)
}
