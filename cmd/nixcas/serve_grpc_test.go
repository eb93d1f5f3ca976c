package main

// End-to-end tests of serve, push and pull: the real binary as
// subprocesses, talking gRPC over loopback, and real Nix (a throwaway
// store) as the source of store paths.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/store"
)

// grpcServe is a running `nixcas serve`.
type grpcServe struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	mu       sync.Mutex
	stderr   bytes.Buffer
	done     chan error
}

var grpcServeAddrRE = regexp.MustCompile(`gRPC on (\S+), HTTP on (\S+)`)

// startGRPCServe starts `nixcas serve` on free loopback ports with extra
// arguments and waits until it listens. The server is stopped (SIGTERM)
// when the test ends, unless the test stopped it.
func startGRPCServe(t *testing.T, data string, args ...string) *grpcServe {
	t.Helper()
	s := &grpcServe{done: make(chan error, 1)}
	all := append([]string{"serve", "--data", data, "--listen-grpc", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"}, args...)
	s.cmd = exec.Command(e2eBinary, all...)
	s.cmd.Env = e2eEnv()
	pipe, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(pipe)
		first := true
		for {
			line, err := r.ReadString('\n')
			s.mu.Lock()
			s.stderr.WriteString(line)
			s.mu.Unlock()
			if first {
				ready <- line
				first = false
			}
			if err != nil {
				break
			}
		}
		s.done <- s.cmd.Wait()
	}()
	select {
	case line := <-ready:
		m := grpcServeAddrRE.FindStringSubmatch(line)
		if m == nil {
			s.cmd.Process.Kill()
			t.Fatalf("nixcas serve: %s", line)
		}
		s.grpcAddr, s.httpAddr = m[1], m[2]
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		t.Fatal("nixcas serve did not start listening within 30 s")
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.stop(t)
		}
	})
	return s
}

// stop sends SIGTERM and checks that the server exits cleanly.
func (s *grpcServe) stop(t *testing.T) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if err != nil {
			t.Errorf("nixcas serve exited with %v:\n%s", err, s.stderr.String())
		}
		if !strings.Contains(s.stderr.String(), "nixcas: stopped") {
			t.Errorf("nixcas serve did not report a clean stop:\n%s", s.stderr.String())
		}
	case <-time.After(60 * time.Second):
		// SIGQUIT makes it print every goroutine's stack and exit: the
		// failure says where it hangs.
		s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("nixcas serve did not stop within 60 s of SIGTERM; its stderr, its goroutines last:\n%s", s.stderr.String())
	}
}

// grpcPushOutput is one line of `push --json`.
type grpcPushOutput struct {
	Path          string          `json:"path"`
	Base          string          `json:"base"`
	Root          json.RawMessage `json:"root"`
	NARHash       string          `json:"narHash"`
	NARSize       uint64          `json:"narSize"`
	BytesSent     uint64          `json:"bytesSent"`
	ChunksSent    uint64          `json:"chunksSent"`
	ChunksSkipped uint64          `json:"chunksSkipped"`
}

// grpcPullOutput is the output of `pull --json`.
type grpcPullOutput struct {
	Path            string          `json:"path"`
	Base            string          `json:"base"`
	Root            json.RawMessage `json:"root"`
	NARHash         string          `json:"narHash"`
	NARSize         uint64          `json:"narSize"`
	BytesReceived   uint64          `json:"bytesReceived"`
	ChunksFetched   uint64          `json:"chunksFetched"`
	ChunksFromCache uint64          `json:"chunksFromCache"`
}

func grpcPush(t *testing.T, args ...string) []grpcPushOutput {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"push", "--json"}, args...)}.mustSucceed(t)
	var out []grpcPushOutput
	dec := json.NewDecoder(bytes.NewReader(res.Stdout))
	for {
		var o grpcPushOutput
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("push output %q: %v", res.Stdout, err)
		}
		out = append(out, o)
	}
	return out
}

func grpcPull(t *testing.T, args ...string) grpcPullOutput {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"pull", "--json"}, args...)}.mustSucceed(t)
	var out grpcPullOutput
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		t.Fatalf("pull output %q: %v", res.Stdout, err)
	}
	return out
}

// grpcEdgeCase returns the edge-case tree of that name.
func grpcEdgeCase(t *testing.T, name string) *testtree.Node {
	t.Helper()
	for _, tree := range testtree.EdgeCases() {
		if tree.Name == name {
			return tree.Root
		}
	}
	t.Fatalf("no edge-case tree %q", name)
	return nil
}

// grpcNixHash returns the NAR hash of path as Nix computes it.
func grpcNixHash(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("nix-hash", "--type", "sha256", "--base32", path).Output()
	if err != nil {
		t.Fatalf("nix-hash %s: %v", path, err)
	}
	return "sha256:" + strings.TrimSpace(string(out))
}

func TestGRPCServePushPull(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "server")
	srv := startGRPCServe(t, data)
	src := filepath.Join(dir, "src")
	testtree.Build(t, src, testtree.Dir(testtree.Entries{
		"package": grpcEdgeCase(t, "package-like"),
		"dedup":   testtree.Dedup().Root,
		"empty":   testtree.Dir(nil),
		"nothing": testtree.File(testtree.Empty()),
	}))
	want := grpcNixHash(t, src)

	first := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache1"), src)
	if len(first) != 1 || first[0].NARHash != want || first[0].ChunksSent == 0 || first[0].BytesSent == 0 {
		t.Fatalf("first push: %+v, want NAR hash %s and chunks sent", first, want)
	}
	again := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache1"), src)
	if again[0].BytesSent != 0 || again[0].ChunksSent != 0 || again[0].ChunksSkipped != first[0].ChunksSent+first[0].ChunksSkipped {
		t.Errorf("second push: %+v, want nothing sent", again[0])
	}
	// The same tree from another client, with an empty cache: nothing sent.
	other := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache-other"), src)
	if other[0].BytesSent != 0 || string(other[0].Root) != string(first[0].Root) {
		t.Errorf("push from another client: %+v", other[0])
	}

	// The same tree as a NAR file: the same root, nothing to send.
	nar := filepath.Join(dir, "src.nar")
	f, err := os.Create(nar)
	if err != nil {
		t.Fatal(err)
	}
	dump := exec.Command("nix-store", "--dump", src)
	dump.Stdout = f
	if err := dump.Run(); err != nil {
		t.Fatalf("nix-store --dump: %v", err)
	}
	f.Close()
	fromNAR := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache1"), nar)
	if string(fromNAR[0].Root) != string(first[0].Root) || fromNAR[0].NARHash != want || fromNAR[0].BytesSent != 0 {
		t.Errorf("push of the NAR file: %+v", fromNAR[0])
	}

	out := filepath.Join(dir, "out")
	pulled := grpcPull(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache2"), "--root", string(first[0].Root), "--to", out)
	if pulled.ChunksFetched == 0 || pulled.BytesReceived == 0 || pulled.NARHash != want || pulled.NARSize != first[0].NARSize ||
		string(pulled.Root) != string(first[0].Root) || pulled.Path != "" {
		t.Errorf("pull into an empty cache: %+v, want root %s, NAR hash %s, NAR size %d", pulled, first[0].Root, want, first[0].NARSize)
	}
	if got := grpcNixHash(t, out); got != want {
		t.Fatalf("pulled tree hashes to %s, want %s", got, want)
	}
	for _, p := range []string{"package/bin/hello", "package/lib/libhello.so"} {
		fi, err := os.Lstat(filepath.Join(out, p))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, "hello") && fi.Mode()&0o100 == 0 || strings.HasSuffix(p, ".so") && fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
	}
	again2 := grpcPull(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache2"), "--root", string(first[0].Root), "--to", out+"2")
	if again2.ChunksFetched != 0 || again2.BytesReceived != 0 || again2.ChunksFromCache != pulled.ChunksFetched+pulled.ChunksFromCache {
		t.Errorf("second pull: %+v after %+v", again2, pulled)
	}

	// A clean stop, then the data is there after a restart.
	srv.stop(t)
	srv = startGRPCServe(t, data)
	grpcPull(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache3"), "--root", string(first[0].Root), "--to", out+"3")
	if got := grpcNixHash(t, out+"3"); got != want {
		t.Errorf("tree pulled after a restart hashes to %s", got)
	}
}

// grpcNix runs nix with the given store.
func grpcNix(t *testing.T, nixStore string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], append([]string{"--store", nixStore}, args[1:]...)...)
	// Nix remembers what a binary cache URL holds (narinfo-cache-positive-ttl,
	// 30 days); test servers reuse loopback ports, so a cache of its own per
	// Nix store, beside it, keeps a path "known" to an earlier test's server
	// from being skipped.
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+nixStore+".cache")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestGRPCPushStorePath pushes the closure of a store path from a
// throwaway Nix store: a directory added with nix-store --add and two text
// files (content-addressed) referring to it and to each other, the top
// one signed.
func TestGRPCPushStorePath(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	nixStore := filepath.Join(dir, "nix")
	tree := filepath.Join(dir, "tree")
	testtree.Build(t, tree, grpcEdgeCase(t, "package-like"))
	dirPath := grpcNix(t, nixStore, "nix-store", "--add", tree)
	expr := fmt.Sprintf(`let d = builtins.storePath %q; b = builtins.toFile "b" "uses ${d}\n"; in builtins.toFile "a" "uses ${b} and ${d}\n"`, dirPath)
	top := strings.Trim(grpcNix(t, nixStore, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr), `"`)
	keyDir := t.TempDir()
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "test-1", filepath.Join(keyDir, "sk"), filepath.Join(keyDir, "pk")).CombinedOutput(); err != nil {
		t.Fatalf("generating a key: %v\n%s", err, out)
	}
	grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "store", "sign", "--key-file", filepath.Join(keyDir, "sk"), top)
	var nixInfos []client.NixPath
	if err := json.Unmarshal([]byte(grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "path-info", "--json", "--recursive", top)), &nixInfos); err != nil {
		t.Fatal(err)
	}
	if len(nixInfos) != 3 {
		t.Fatalf("closure of %s: %d paths, want 3", top, len(nixInfos))
	}

	srv := startGRPCServe(t, filepath.Join(dir, "server"))
	cache := filepath.Join(dir, "cache")
	pushed := grpcPush(t, "--server", srv.grpcAddr, "--cache", cache, "--nix-store", nixStore, top)
	if len(pushed) != 3 || pushed[2].Path != top {
		t.Fatalf("push of the closure of %s printed %+v", top, pushed)
	}
	order := map[string]int{}
	for i, p := range pushed {
		order[p.Path] = i
	}
	c, err := client.Dial(srv.grpcAddr, client.Options{Cache: new(castore.MemoryStore)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range nixInfos {
		i, ok := order[want.Path]
		if !ok {
			t.Fatalf("%s was not pushed", want.Path)
		}
		if pushed[i].NARSize != want.NARSize {
			t.Errorf("%s: pushed a NAR of %d bytes, nix says %d", want.Path, pushed[i].NARSize, want.NARSize)
		}
		base := filepath.Base(want.Path)
		d, err := store.ParsePathDigest(base[:32])
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.GetPathInfo(context.Background(), d)
		if err != nil {
			t.Fatalf("%s: %v", want.Path, err)
		}
		var refs []string
		for _, r := range want.References {
			refs = append(refs, filepath.Base(r))
			if order[r] > i || r != want.Path && order[r] == i {
				t.Errorf("%s was pushed before its reference %s", want.Path, r)
			}
		}
		slices.Sort(refs)
		if !slices.Equal(got.References, refs) || got.CA != want.CA || got.NARSize != want.NARSize {
			t.Errorf("%s: the server has references %v, CA %q, NAR size %d; nix has %v, %q, %d", want.Path, got.References, got.CA, got.NARSize, refs, want.CA, want.NARSize)
		}
		var sigs []string
		for _, s := range got.Signatures {
			sigs = append(sigs, s.String())
		}
		if !slices.Equal(sigs, want.Signatures) {
			t.Errorf("%s: signatures %v, nix has %v", want.Path, sigs, want.Signatures)
		}
	}
	if len(nixInfos[0].References)+len(nixInfos[1].References)+len(nixInfos[2].References) != 3 {
		t.Errorf("the closure has %+v references, want 3 in all", nixInfos)
	}

	// Legacy Nix copies the closure from the HTTP binary cache.
	other := filepath.Join(dir, "nix2")
	grpcNix(t, other, "nix", "--extra-experimental-features", "nix-command", "copy", "--no-check-sigs", "--from", "http://"+srv.httpAddr, top)
	for _, p := range nixInfos {
		// A local store at another root keeps its paths under it.
		want := grpcNixHash(t, filepath.Join(nixStore, p.Path))
		if got := grpcNix(t, other, "nix-store", "--query", "--hash", p.Path); got != want {
			t.Errorf("%s copied by nix from the server has NAR hash %s, want %s", p.Path, got, want)
		}
	}

	// Pushing again sends nothing; pulling the directory path by its store
	// path gives back the tree.
	for _, p := range grpcPush(t, "--server", srv.grpcAddr, "--cache", cache, "--nix-store", nixStore, top) {
		if p.BytesSent != 0 || p.ChunksSent != 0 {
			t.Errorf("second push of %s: %+v", p.Path, p)
		}
	}
	out := filepath.Join(dir, "out")
	pulled := grpcPull(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache2"), dirPath, "--to", out)
	want := grpcNixHash(t, tree)
	if got := grpcNixHash(t, out); got != want {
		t.Errorf("pulled %s hashes to %s, want %s", dirPath, got, want)
	}
	if pulled.Path != dirPath || pulled.NARHash != want || len(pulled.Root) == 0 {
		t.Errorf("pull --json of %s: %+v, want its path and NAR hash %s", dirPath, pulled, want)
	}

	// The whole closure in one pull: each path under its base name, as
	// Nix has it; the directory's chunks come from the cache.
	many := filepath.Join(dir, "many")
	var paths []string
	for _, p := range nixInfos {
		paths = append(paths, p.Path)
	}
	res := e2eInvocation{Args: append([]string{"pull", "--json", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache2"), "--to", many}, paths...)}.mustSucceed(t)
	var manyOut struct {
		Paths           []grpcPullOutput `json:"paths"`
		ChunksFetched   uint64           `json:"chunksFetched"`
		ChunksFromCache uint64           `json:"chunksFromCache"`
	}
	if err := json.Unmarshal(res.Stdout, &manyOut); err != nil {
		t.Fatalf("pull output %q: %v", res.Stdout, err)
	}
	if len(manyOut.Paths) != 3 || manyOut.ChunksFetched != 2 || manyOut.ChunksFromCache != pulled.ChunksFetched+pulled.ChunksFromCache {
		t.Errorf("pull of the closure: %s; want 3 paths, the two text files' chunks fetched, the directory's from the cache", res.Stdout)
	}
	for i, p := range nixInfos {
		want := grpcNixHash(t, filepath.Join(nixStore, p.Path))
		if got := grpcNixHash(t, filepath.Join(many, filepath.Base(p.Path))); got != want {
			t.Errorf("%s pulled with the closure hashes to %s, want %s", p.Path, got, want)
		}
		if i < len(manyOut.Paths) && (manyOut.Paths[i].Path != p.Path || manyOut.Paths[i].NARHash != want) {
			t.Errorf("pull --json entry %d: %+v, want %s with NAR hash %s", i, manyOut.Paths[i], p.Path, want)
		}
	}
}

// TestGRPCTokens: with token files, pushes and pulls need the tokens.
func TestGRPCTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pushTok, readTok := filepath.Join(dir, "push"), filepath.Join(dir, "read")
	os.WriteFile(pushTok, []byte("push-secret\n"), 0o600)
	os.WriteFile(readTok, []byte("read-secret\n"), 0o600)
	srv := startGRPCServe(t, filepath.Join(dir, "server"), "--push-token-file", pushTok, "--read-token-file", readTok)
	src := filepath.Join(dir, "src")
	testtree.Build(t, src, testtree.Dir(testtree.Entries{"f": testtree.File(testtree.Random(5, 100_000))}))

	res := e2eInvocation{Args: []string{"push", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "c1"), src}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "Unauthenticated") {
		t.Errorf("push without a token: %v, %s", res.Err, res.Stderr)
	}
	res = e2eInvocation{Args: []string{"push", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "c1"), "--token-file", readTok, src}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "PermissionDenied") {
		t.Errorf("push with the read token: %v, %s", res.Err, res.Stderr)
	}
	pushed := grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "c1"), "--token-file", pushTok, src)
	root := string(pushed[0].Root)
	res = e2eInvocation{Args: []string{"pull", "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "c2"), "--root", root, "--to", filepath.Join(dir, "out")}}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "Unauthenticated") {
		t.Errorf("pull without a token: %v, %s", res.Err, res.Stderr)
	}
	if _, err := os.Lstat(filepath.Join(dir, "out")); err == nil {
		t.Errorf("a refused pull left its destination")
	}
	grpcPull(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "c2"), "--token-file", readTok, "--root", root, "--to", filepath.Join(dir, "out"))
}
