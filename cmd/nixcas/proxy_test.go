package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/store"
)

// proxyTestTrees are two versions of a package: the second has a few
// bytes inserted into its big executable, another small file changed and
// a file added, so that most of its chunks are the first's.
func proxyTestTrees() (v1, v2 *testtree.Node) {
	tool := testtree.Random(1, 3<<20)
	data := testtree.Mixed(2, 2<<20)
	small := testtree.Random(3, 100<<10) // one chunk, more than 16 KiB
	v1 = testtree.Dir(testtree.Entries{
		"bin":   testtree.Dir(testtree.Entries{"tool": testtree.Exec(tool)}),
		"lib":   testtree.Dir(testtree.Entries{"data": testtree.File(data), "link": testtree.Link("data"), "small": testtree.File(small)}),
		"share": testtree.Dir(testtree.Entries{"doc": testtree.File(testtree.Text("version 1\n"))}),
	})
	v2 = testtree.Dir(testtree.Entries{
		"bin":   testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Insert(tool, 1<<20, []byte("patched in version 2")))}),
		"lib":   testtree.Dir(testtree.Entries{"data": testtree.File(data), "link": testtree.Link("data"), "small": testtree.File(small)}),
		"share": testtree.Dir(testtree.Entries{"doc": testtree.File(testtree.Text("version 2\n")), "NEWS": testtree.File(testtree.Text("news\n"))}),
	})
	return v1, v2
}

// startUpstream runs a nixcas server on loopback at grpcAddr (port 0 for
// any) until the test ends.
func startUpstream(t *testing.T, grpcAddr string) *server.Server {
	t.Helper()
	srv, err := server.New(server.Options{DataDir: filepath.Join(t.TempDir(), "upstream"), GRPCAddr: grpcAddr, HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return srv
}

// publishTrees pushes trees to the server at addr as signed store paths
// named after their keys.
func publishTrees(t *testing.T, addr string, key signature.SecretKey, trees map[string]*testtree.Node) map[string]*store.PathInfo {
	t.Helper()
	cache, err := pebblestore.Open(filepath.Join(t.TempDir(), "push-cache"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	c, err := client.Dial(addr, client.Options{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := map[string]*store.PathInfo{}
	for name, tree := range trees {
		var nar bytes.Buffer
		if err := testtree.WriteNAR(&nar, tree); err != nil {
			t.Fatal(err)
		}
		p, err := publishNAR(t.Context(), c, cache, name, &nar, key)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	return out
}

// runProxy starts a proxy of upstream until the test ends.
func runProxy(t *testing.T, pc proxyConfig) (*proxyServer, string) {
	t.Helper()
	pc.listen = "127.0.0.1:0"
	if pc.cache == "" {
		pc.cache = filepath.Join(t.TempDir(), "proxy-cache")
	}
	px, err := startProxy(t.Context(), pc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- px.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return px, "http://" + px.Addr().String()
}

func testCounter(t *testing.T, base, name string) float64 {
	t.Helper()
	v, err := scrapeCounter(base+"/metrics", name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// publishedUpstream starts a nixcas server holding the two versions of
// proxyTestTrees as store paths pkg-1.0 and pkg-1.1, signed by a key
// whose public half pub Nix can trust.
func publishedUpstream(t *testing.T, nix nixEnv) (srv *server.Server, paths map[string]*store.PathInfo, pub string) {
	t.Helper()
	key, pub, err := nix.keyPair(t.Context(), t.TempDir(), "upstream-test-1")
	if err != nil {
		t.Fatal(err)
	}
	srv = startUpstream(t, "127.0.0.1:0")
	v1, v2 := proxyTestTrees()
	return srv, publishTrees(t, srv.GRPCAddr().String(), key, map[string]*testtree.Node{"pkg-1.0": v1, "pkg-1.1": v2}), pub
}

// restartableProxy returns the address of a proxy of pc that start runs
// until the stop it returns is called, and runs again after: each run
// in turn behind that one address (stableAddr), so that Nix sees one
// cache.
func restartableProxy(t *testing.T, pc proxyConfig) (base string, start func() (stop func())) {
	t.Helper()
	var target atomic.Value
	pc.listen = "127.0.0.1:0"
	return "http://" + stableAddr(t, &target), func() func() {
		px, err := startProxy(t.Context(), pc)
		if err != nil {
			t.Fatal(err)
		}
		target.Store(px.Addr().String())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- px.Serve(ctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
}

// TestProxyNixCopy copies two versions of a path from the proxy with real
// Nix: the second fetches from the upstream only the chunks it does not
// share with the first.
func TestProxyNixCopy(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	srv, paths, pub := publishedUpstream(t, nix)
	_, base := runProxy(t, proxyConfig{upstream: srv.GRPCAddr().String(), compression: "zstd"})

	dst := filepath.Join(t.TempDir(), "store")
	var fetched, hits [2]float64
	for i, name := range []string{"pkg-1.0", "pkg-1.1"} {
		p := paths[name]
		up0, hit0 := testCounter(t, base, "nixcas_proxy_upstream_bytes_total"), testCounter(t, base, "nixcas_proxy_cache_hit_bytes_total")
		if _, err := nix.run(t.Context(), "nix", "copy", "--from", base, "--to", dst,
			"--option", "trusted-public-keys", pub, p.AbsolutePath()); err != nil {
			t.Fatal(err)
		}
		fetched[i] = testCounter(t, base, "nixcas_proxy_upstream_bytes_total") - up0
		hits[i] = testCounter(t, base, "nixcas_proxy_cache_hit_bytes_total") - hit0

		out, err := nix.run(t.Context(), "nix", "path-info", "--json", "--sigs", "--store", dst, p.AbsolutePath())
		if err != nil {
			t.Fatal(err)
		}
		var infos []struct {
			NarHash    string   `json:"narHash"`
			NarSize    uint64   `json:"narSize"`
			Signatures []string `json:"signatures"`
		}
		if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
			t.Fatalf("nix path-info: %v: %s", err, out)
		}
		sri := "sha256-" + base64.StdEncoding.EncodeToString(p.NARSha256[:])
		if infos[0].NarHash != p.NARHash() && infos[0].NarHash != sri || infos[0].NarSize != p.NARSize {
			t.Errorf("%s: copied NAR %s of %d bytes, want %s of %d", name, infos[0].NarHash, infos[0].NarSize, p.NARHash(), p.NARSize)
		}
		if len(infos[0].Signatures) != 1 || !strings.HasPrefix(infos[0].Signatures[0], "upstream-test-1:") {
			t.Errorf("%s: signatures %q, want the upstream's", name, infos[0].Signatures)
		}
		t.Logf("%s: NAR %d bytes, %.0f bytes from upstream, %.0f from the cache", name, p.NARSize, fetched[i], hits[i])
	}
	if fetched[0] < float64(paths["pkg-1.0"].NARSize)/2 {
		t.Errorf("first copy fetched %.0f bytes from upstream, NAR %d: metric too low", fetched[0], paths["pkg-1.0"].NARSize)
	}
	if n := paths["pkg-1.1"].NARSize; fetched[1] > float64(n)/4 {
		t.Errorf("second copy fetched %.0f bytes from upstream, want well below its NAR's %d", fetched[1], n)
	}
	if hits[1] < float64(paths["pkg-1.1"].NARSize)/2 {
		t.Errorf("second copy found %.0f bytes in the cache, want most of %d", hits[1], paths["pkg-1.1"].NARSize)
	}

	// A NAR served again from the warm cache needs nothing from upstream.
	up0 := testCounter(t, base, "nixcas_proxy_upstream_bytes_total")
	p := paths["pkg-1.1"]
	if _, _, err := getNAR(base+"/nar/"+nixbase32.EncodeToString(p.NARSha256[:])+".nar", p.NARSha256); err != nil {
		t.Fatal(err)
	}
	if up := testCounter(t, base, "nixcas_proxy_upstream_bytes_total") - up0; up != 0 {
		t.Errorf("serving a cached NAR again fetched %.0f bytes from upstream", up)
	}

	// Uploads are refused.
	req, _ := http.NewRequest(http.MethodPut, base+"/"+paths["pkg-1.0"].Path[:32]+".narinfo", strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT narinfo: %s, want 405", resp.Status)
	}
}

// getNARVia fetches p's narinfo then NAR from base, checking its hash.
func getNARVia(t *testing.T, base string, p *store.PathInfo) {
	t.Helper()
	resp, err := http.Get(base + "/" + p.Path[:32] + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("narinfo of %s: %s", p.Path, resp.Status)
	}
	if _, _, err := getNAR(base+"/nar/"+nixbase32.EncodeToString(p.NARSha256[:])+".nar", p.NARSha256); err != nil {
		t.Fatal(err)
	}
}

// TestProxyCacheBound serves two trees through a proxy whose cache holds
// less than both: chunks of the first are evicted, the counters stay
// consistent, and the first is served again by fetching them anew.
func TestProxyCacheBound(t *testing.T) {
	t.Parallel()
	key, _, err := signature.GenerateKeypair("upstream-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := startUpstream(t, "127.0.0.1:0")
	v1, v2 := proxyTestTrees()
	v3 := testtree.Dir(testtree.Entries{"big": testtree.File(testtree.Random(9, 4<<20))})
	paths := publishTrees(t, srv.GRPCAddr().String(), key, map[string]*testtree.Node{"a-1": v1, "a-2": v2, "other": v3})
	px, base := runProxy(t, proxyConfig{upstream: srv.GRPCAddr().String(), cacheSize: 1 << 20, compression: "none"})

	getNARVia(t, base, paths["a-1"])
	getNARVia(t, base, paths["other"])
	st, err := px.cache.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Only the chunks of the tree served last are left (kept, though over
	// the bound, while it is served).
	if st.UniqueChunkBytes > 4<<20+1<<20 || st.UniqueChunkBytes < 4<<20 {
		t.Errorf("cache holds %d chunk bytes, want about 4 MiB", st.UniqueChunkBytes)
	}
	var chunks, bytes uint64
	err = px.cache.ScanChunks(t.Context(), func(_ castore.Digest, size int) error {
		chunks++
		bytes += uint64(size)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if chunks != st.Chunks || bytes != st.UniqueChunkBytes {
		t.Errorf("counters say %d chunks of %d bytes, the cache has %d of %d", st.Chunks, st.UniqueChunkBytes, chunks, bytes)
	}
	up0 := testCounter(t, base, "nixcas_proxy_upstream_bytes_total")
	getNARVia(t, base, paths["a-1"])
	getNARVia(t, base, paths["a-2"])
	if up := testCounter(t, base, "nixcas_proxy_upstream_bytes_total") - up0; up < 1<<20 {
		t.Errorf("serving evicted chunks again fetched %.0f bytes from upstream", up)
	}
}

// TestProxyUpstreamLate starts the upstream after the proxy: a narinfo
// asked for while it is down is a 404 at once (Nix then tries its next
// substituter), and once it is up the proxy serves its paths.
//
// Not parallel: it frees a port for the upstream to take later, which a
// neighbour could take first.
func TestProxyUpstreamLate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, base := runProxy(t, proxyConfig{upstream: addr, compression: "zstd"})

	key, _, err := signature.GenerateKeypair("upstream-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("nixcas proxy path late"))
	resp, err := http.Get(base + "/" + nixbase32.EncodeToString(d[:20]) + ".narinfo")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("narinfo while the upstream is down: %s, want 404", resp.Status)
	}

	srv := startUpstream(t, addr)
	paths := publishTrees(t, srv.GRPCAddr().String(), key, map[string]*testtree.Node{"late": testtree.File(testtree.Text("late\n"))})
	p := paths["late"]
	// The proxy's connection to the upstream comes back after gRPC's
	// reconnection backoff; until then narinfos are 404s.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(base + "/" + p.Path[:32] + ".narinfo")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("narinfo after the upstream started: %s", resp.Status)
		}
	}
	getNARVia(t, base, p)
}

// TestProxyRestartFindsNARByPath: a proxy in front of a nixcas server
// answers a NAR asked for after a restart (Nix keeps the narinfos an
// earlier run served) by looking its store path up upstream, which the
// NAR URL names, not by listing every path the upstream holds.
func TestProxyRestartFindsNARByPath(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	srv, paths, pub := publishedUpstream(t, nix)
	p := paths["pkg-1.0"]

	// lists counts the upstream's PathInfoService/List calls.
	lists := func() float64 {
		t.Helper()
		_, body := httpDo(t, http.DefaultClient, http.MethodGet, "http://"+srv.HTTPAddr().String()+"/metrics", "")
		var n float64
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "nixcas_grpc_request_duration_seconds_count{") && strings.Contains(line, `PathInfoService/List"`) {
				f := strings.Fields(line)
				v, err := strconv.ParseFloat(f[len(f)-1], 64)
				if err != nil {
					t.Fatal(err)
				}
				n += v
			}
		}
		return n
	}
	base, start := restartableProxy(t, proxyConfig{upstream: srv.GRPCAddr().String(), cache: filepath.Join(t.TempDir(), "proxy-cache")})
	stop := start()
	if _, err := nix.run(t.Context(), "nix", "path-info", "--store", base, "--option", "trusted-public-keys", pub, p.AbsolutePath()); err != nil {
		t.Fatal(err)
	}
	stop()
	defer start()()
	before := lists()
	dst := filepath.Join(t.TempDir(), "store")
	if _, err := nix.run(t.Context(), "nix", "copy", "--from", base, "--to", dst,
		"--option", "trusted-public-keys", pub, p.AbsolutePath()); err != nil {
		t.Fatalf("nix copy through the restarted proxy: %v", err)
	}
	if n := lists() - before; n != 0 {
		t.Errorf("the restarted proxy listed the upstream's paths %.0f times to find the NAR; want it looked up by its store path", n)
	}
	out, err := nix.run(t.Context(), "nix", "path-info", "--json", "--store", dst, p.AbsolutePath())
	if err != nil {
		t.Fatal(err)
	}
	sri := "sha256-" + base64.StdEncoding.EncodeToString(p.NARSha256[:])
	if !strings.Contains(out, sri) && !strings.Contains(out, p.NARHash()) {
		t.Errorf("copied path info %s lacks the NAR hash %s", out, p.NARHash())
	}
}

// stableAddr is a loopback TCP address that forwards each connection to
// whatever address target holds when it comes: a restarted server keeps
// one URL (Nix keys what it caches of a binary cache by its URL) without
// binding a port freed a moment before, which a test running beside it
// may have taken meanwhile.
func stableAddr(t *testing.T, target *atomic.Value) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target.Load().(string))
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}
