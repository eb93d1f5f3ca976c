package main

// Tests of the proxy's signatures (the upstream's, stored when paths are
// pushed, and the proxy's own), its pull-through mode in front of a plain
// binary cache, and its failures: a port in use, an upstream that is down.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/store"
)

// startServer runs a nixcas server with o (data directory and listeners
// filled in) until the test ends.
func startServer(t *testing.T, o server.Options) *server.Server {
	t.Helper()
	o.DataDir = filepath.Join(t.TempDir(), "upstream")
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	srv, err := server.New(o)
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

// nixSigs returns the signatures Nix recorded for path in the store dst.
func nixSigs(t *testing.T, nix nixEnv, dst, path string) []string {
	t.Helper()
	out, err := nix.run(t.Context(), "nix", "path-info", "--json", "--sigs", "--store", dst, path)
	if err != nil {
		t.Fatal(err)
	}
	var infos []struct {
		Signatures []string `json:"signatures"`
	}
	if err := json.Unmarshal([]byte(out), &infos); err != nil || len(infos) != 1 {
		t.Fatalf("nix path-info: %v: %s", err, out)
	}
	return infos[0].Signatures
}

// hasSigBy reports whether sigs holds a signature by the key named name.
func hasSigBy(sigs []string, name string) bool {
	for _, s := range sigs {
		if strings.HasPrefix(s, name+":") {
			return true
		}
	}
	return false
}

// TestProxySignatures copies through the proxy with real Nix: a path
// pushed over gRPC to `serve --sign-key` carries the server's signature
// (made when it was stored), which Nix accepts trusting only the server's
// key; a proxy with its own key serves its signature too, which Nix accepts
// trusting only the proxy's key; trusting neither, Nix refuses the path.
func TestProxySignatures(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	serverKey, serverPub, err := nix.keyPair(t.Context(), t.TempDir(), "server-test-1")
	if err != nil {
		t.Fatal(err)
	}
	proxyKey, proxyPub, err := nix.keyPair(t.Context(), t.TempDir(), "proxy-test-1")
	if err != nil {
		t.Fatal(err)
	}
	pusherKey, _, err := signature.GenerateKeypair("pusher-test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, server.Options{SignKeys: []signature.SecretKey{serverKey}})
	tree := testtree.Dir(testtree.Entries{"bin": testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Random(5, 300_000))})})
	paths := publishTrees(t, srv.GRPCAddr().String(), pusherKey, map[string]*testtree.Node{"signed-1.0": tree})
	p := paths["signed-1.0"]
	// The signature was made when the path was stored: the PathInfo the
	// server returned from Put has it.
	found := false
	for _, s := range p.Signatures {
		found = found || s.Name == "server-test-1"
	}
	if !found {
		t.Errorf("PathInfo recorded by the server has signatures by %v, want server-test-1's", p.Signatures)
	}

	_, plain := runProxy(t, proxyConfig{upstream: srv.GRPCAddr().String(), compression: "zstd"})
	_, signing := runProxy(t, proxyConfig{upstream: "grpc://" + srv.GRPCAddr().String(), compression: "zstd", signKeys: []signature.SecretKey{proxyKey}})

	for _, tc := range []struct {
		name, base, trust string
		want              []string // key names Nix must record
		fails             bool
	}{
		{"upstream signature, trusting the server only", plain, serverPub, []string{"server-test-1", "pusher-test-1"}, false},
		{"proxy signature, trusting the proxy only", signing, proxyPub, []string{"proxy-test-1", "server-test-1"}, false},
		{"trusting neither", signing, "other-1:" + strings.Repeat("A", 43) + "=", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "store")
			out, err := nix.run(t.Context(), "nix", "copy", "--from", tc.base, "--to", dst,
				"--option", "trusted-public-keys", tc.trust, p.AbsolutePath())
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), "signature") {
					t.Fatalf("nix copy trusting no key of the path: %v %s, want a refusal for lack of a signature", err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sigs := nixSigs(t, nix, dst, p.AbsolutePath())
			for _, name := range tc.want {
				if !hasSigBy(sigs, name) {
					t.Errorf("signatures %q lack one by %s", sigs, name)
				}
			}
		})
	}
}

// pullThroughCache writes a binary cache of three paths (the last refers
// to the other two), xz-compressed and signed by Nix with the key in
// keyFile, and returns its directory and paths.
func pullThroughCache(t *testing.T, keyFile string) (string, []importE2EPath) {
	t.Helper()
	src, ps := importE2ECache(t, "zstd")
	dir := filepath.Join(t.TempDir(), "signed")
	importE2ENix(t, "nix", "copy", "--no-check-sigs", "--from", "file://"+src,
		"--to", "file://"+dir+"?compression=xz&secret-key="+keyFile, ps[2].abs())
	return dir, ps
}

// signedPullThroughCache is pullThroughCache signed by a new key, whose
// public half pub Nix can trust.
func signedPullThroughCache(t *testing.T, nix nixEnv) (dir string, ps []importE2EPath, pub string) {
	t.Helper()
	keyDir := t.TempDir()
	_, pub, err := nix.keyPair(t.Context(), keyDir, "upstream-cache-1")
	if err != nil {
		t.Fatal(err)
	}
	dir, ps = pullThroughCache(t, filepath.Join(keyDir, "secret")) // where keyPair writes it
	return dir, ps, pub
}

// countingServer serves h, counting the requests.
func countingServer(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts, &n
}

// TestProxyPullThrough puts the proxy in front of a plain binary cache
// (Nix's own file:// cache, xz-compressed and signed by Nix, served by
// net/http): real Nix copies a closure through it trusting only the
// upstream's key; a second copy into another store is served from the
// proxy's local store without one request to the upstream, with the NARs
// Nix wrote; with --sign-key the proxy's signature is served as well.
func TestProxyPullThrough(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	dir, ps, upstreamPub := signedPullThroughCache(t, nix)
	ts, requests := countingServer(t, http.FileServer(http.Dir(dir)))

	proxyKey, proxyPub, err := nix.keyPair(t.Context(), t.TempDir(), "proxy-test-1")
	if err != nil {
		t.Fatal(err)
	}
	px, base := runProxy(t, proxyConfig{upstream: ts.URL + "/", signKeys: []signature.SecretKey{proxyKey}})

	copyAll := func(trust string) string { return copyClosureFrom(t, nix, base, trust, ps) }

	dst := copyAll(upstreamPub)
	if n := requests.Load(); n < int64(2*len(ps)) {
		t.Errorf("first copy made %d requests to the upstream, want at least a narinfo and a NAR per path (%d)", n, 2*len(ps))
	}
	for _, p := range ps {
		if sigs := nixSigs(t, nix, dst, p.abs()); !hasSigBy(sigs, "upstream-cache-1") || !hasSigBy(sigs, "proxy-test-1") {
			t.Errorf("%s: signatures %q, want the upstream's and the proxy's", p.base, sigs)
		}
	}

	before := requests.Load()
	copyAll(proxyPub)
	if n := requests.Load() - before; n != 0 {
		t.Errorf("second copy made %d requests to the upstream, want none", n)
	}
	st, err := px.cache.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Chunks == 0 {
		t.Errorf("the proxy's store holds no chunks after pulling %d paths through", len(ps))
	}
}

// unavailablePathInfos is a PathInfoService that is always unavailable,
// counting the calls.
type unavailablePathInfos struct {
	storepb.UnimplementedPathInfoServiceServer
	calls atomic.Int64
}

func (u *unavailablePathInfos) Get(context.Context, *storepb.GetPathInfoRequest) (*storepb.PathInfo, error) {
	u.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "upstream test: down")
}

// hangingListener accepts connections and never answers, counting them.
func hangingListener(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &n
}

// TestProxyUpstreamDown: when the upstream is down, refuses, answers
// errors or does not answer, a narinfo is a 404 after one attempt (no
// retries), within the hang guard, so that Nix moves on to its next
// substituter.
//
// Not parallel: it counts on a freed port staying unused, and on 300 ms
// timeouts.
func TestProxyUpstreamDown(t *testing.T) {
	// A gRPC upstream that answers UNAVAILABLE.
	svc := &unavailablePathInfos{}
	gs := grpc.NewServer()
	storepb.RegisterPathInfoServiceServer(gs, svc)
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gln)
	t.Cleanup(gs.Stop)

	// Nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	// An HTTP cache answering 503.
	var http503 atomic.Int64
	ts503 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http503.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ts503.Close)

	hangGRPC, hangGRPCConns := hangingListener(t)
	hangHTTP, hangHTTPConns := hangingListener(t)

	d := sha256.Sum256([]byte("nixcas proxy path down"))
	narinfo := "/" + nixbase32.EncodeToString(d[:20]) + ".narinfo"
	for _, tc := range []struct {
		name     string
		upstream string
		attempts func() int64 // nil: not countable
	}{
		{"gRPC upstream answering UNAVAILABLE", gln.Addr().String(), svc.calls.Load},
		{"gRPC upstream not listening", "grpc://" + closed, nil},
		{"gRPC upstream not answering", hangGRPC, hangGRPCConns.Load},
		{"HTTP upstream answering 503", ts503.URL, http503.Load},
		{"HTTP upstream not listening", "http://" + closed + "/", nil},
		{"HTTP upstream not answering", "http://" + hangHTTP, hangHTTPConns.Load},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, base := runProxy(t, proxyConfig{upstream: tc.upstream, timeout: 300 * time.Millisecond, compression: "zstd"})
			var before int64
			if tc.attempts != nil {
				before = tc.attempts()
			}
			c := &http.Client{Timeout: time.Minute} // a hang guard only
			resp, err := c.Get(base + narinfo)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("narinfo: %s, want 404", resp.Status)
			}
			if tc.attempts != nil {
				if n := tc.attempts() - before; n != 1 {
					t.Errorf("the upstream was tried %d times, want once", n)
				}
			}
		})
	}
}

// TestProxyUpstreamDownNixFallsBack gives real Nix two substituters: the
// proxy, whose upstream is down, then a file:// cache holding the path.
// Substitution succeeds from the second, and the proxy was asked.
//
// Not parallel: it counts on a freed port staying unused, and on a
// 300 ms timeout.
func TestProxyUpstreamDownNixFallsBack(t *testing.T) {
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	dir, ps, pub := signedPullThroughCache(t, nix)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	_, base := runProxy(t, proxyConfig{upstream: down, timeout: 300 * time.Millisecond, compression: "zstd"})
	proxied := countingProxyRequests(t, base)

	dst := filepath.Join(t.TempDir(), "store")
	start := time.Now()
	out, err := nix.run(t.Context(), "nix-store", "--store", dst, "--realise", ps[2].abs(),
		"--option", "substituters", proxied.URL+" file://"+dir+"?priority=50",
		"--option", "trusted-public-keys", pub)
	if err != nil {
		t.Fatalf("nix-store --realise with the proxy's upstream down: %v\n%s", err, out)
	}
	t.Logf("nix-store --realise took %v with the proxy's upstream down", time.Since(start))
	if sigs := nixSigs(t, nix, dst, ps[2].abs()); !hasSigBy(sigs, "upstream-cache-1") {
		t.Errorf("substituted path has signatures %q", sigs)
	}
	if n := proxied.narinfos.Load(); n == 0 {
		t.Errorf("Nix asked the proxy for no narinfo: the test does not show a fallback")
	}
}

// proxyRequests forwards to a proxy, counting narinfo requests.
type proxyRequests struct {
	URL      string
	narinfos atomic.Int64
}

func countingProxyRequests(t *testing.T, base string) *proxyRequests {
	pr := &proxyRequests{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".narinfo") {
			pr.narinfos.Add(1)
		}
		resp, err := http.Get(base + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(ts.Close)
	pr.URL = ts.URL
	return pr
}

// TestProxyPortInUse: a listen address in use is a clear error and a
// non-zero exit, not a panic.
func TestProxyPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	_, err = startProxy(t.Context(), proxyConfig{upstream: "127.0.0.1:1", listen: addr, cache: filepath.Join(t.TempDir(), "cache"), compression: "zstd"})
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("startProxy on a port in use: %v, want an error naming %s and saying it is in use", err, addr)
	}

	res := e2eInvocation{Args: []string{"proxy", "--upstream", "127.0.0.1:1", "--listen-http", addr, "--cache", filepath.Join(t.TempDir(), "cache")}, Timeout: time.Minute}.run(t)
	if res.Err == nil || !strings.Contains(res.Stderr, "address already in use") {
		t.Errorf("nixcas proxy on a port in use: %v\n%s", res.Err, res.Stderr)
	}

	for _, bad := range []string{"ftp://host/", "host:99999", "grpc://host/some/path"} {
		_, err := startProxy(t.Context(), proxyConfig{upstream: bad, listen: "127.0.0.1:0", cache: filepath.Join(t.TempDir(), "cache")})
		if err == nil || !strings.Contains(err.Error(), "--upstream") {
			t.Errorf("--upstream %q: %v, want an error about --upstream", bad, err)
		}
	}
}

// TestProxyPullThroughAfterRestart: Nix keeps the narinfos it got (for
// weeks), so it asks a pull-through proxy for NARs whose narinfos an
// earlier run of the proxy served and never fetched. Nix looks up a
// closure's narinfos through one proxy, which is then stopped; a new one
// on the same address and cache directory serves the NARs (the URLs name
// the store paths: ?hash=) to Nix with the same cache of narinfos, and
// to plain HTTP.
func TestProxyPullThroughAfterRestart(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	dir, ps, trust := signedPullThroughCache(t, nix)
	ts, _ := countingServer(t, http.FileServer(http.Dir(dir)))

	base, start := restartableProxy(t, proxyConfig{upstream: ts.URL + "/", cache: filepath.Join(t.TempDir(), "proxy-cache")})
	stop := start()
	// Nix reads the closure's narinfos (and keeps them), no NAR.
	if _, err := nix.run(t.Context(), "nix", "path-info", "--recursive", "--store", base,
		"--option", "trusted-public-keys", trust, ps[2].abs()); err != nil {
		t.Fatal(err)
	}
	urls := map[string]string{} // NAR URL of each path, as the first proxy served it
	for _, p := range ps {
		code, body := httpDo(t, http.DefaultClient, http.MethodGet, base+"/"+p.base[:32]+".narinfo", "")
		if code != http.StatusOK {
			t.Fatalf("%s.narinfo: %d %s", p.base[:32], code, body)
		}
		for _, line := range strings.Split(body, "\n") {
			if u, ok := strings.CutPrefix(line, "URL: "); ok {
				urls[p.base] = u
			}
		}
		if !strings.HasSuffix(urls[p.base], "?hash="+p.base[:32]) {
			t.Errorf("%s: NAR URL %q does not name the store path", p.base, urls[p.base])
		}
	}
	stop()
	defer start()()
	// A NAR first: by HTTP, the URL the first proxy gave.
	p0 := ps[0]
	if code, body := httpDo(t, http.DefaultClient, http.MethodGet, base+"/"+urls[p0.base], ""); code != http.StatusOK || body != string(p0.nar) {
		t.Errorf("GET %s from the restarted proxy: %d, %d bytes; want 200 and the %d bytes of the NAR", urls[p0.base], code, len(body), len(p0.nar))
	}
	// Then Nix, with the narinfos it kept.
	copyClosureFrom(t, nix, base, trust, ps)
}

// copyClosureFrom copies the closure of ps[2] (pullThroughCache's paths)
// from the binary cache base into a new store with Nix, trusting the key
// trust, checks every path's NAR against the one Nix wrote, and returns
// the store.
func copyClosureFrom(t *testing.T, nix nixEnv, base, trust string, ps []importE2EPath) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "store")
	if _, err := nix.run(t.Context(), "nix", "copy", "--from", base, "--to", dst,
		"--option", "trusted-public-keys", trust, ps[2].abs()); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		dump, err := nix.run(t.Context(), "nix-store", "--dump", filepath.Join(dst, p.abs()))
		if err != nil {
			t.Fatal(err)
		}
		if dump != string(p.nar) {
			t.Errorf("%s: the copy's NAR differs from the one Nix wrote to the upstream", p.base)
		}
	}
	return dst
}

// TestProxyPullThroughMaxSize: a pull-through proxy with --max-size
// deletes from its cache the paths beyond the bound and collects their
// data in the background; Nix then copies the closure again through it,
// fetched anew from the upstream.
func TestProxyPullThroughMaxSize(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	nix := newNixEnv(t.TempDir())
	dir, ps, trust := signedPullThroughCache(t, nix)
	ts, requests := countingServer(t, http.FileServer(http.Dir(dir)))
	px, base := runProxy(t, proxyConfig{
		upstream:  ts.URL + "/",
		retention: server.RetentionPolicy{MaxSize: 1, Interval: 100 * time.Millisecond},
		// A grace longer than a fetch takes here: its chunks are not
		// collected before its path is recorded.
		gc: server.GCPolicy{Interval: 100 * time.Millisecond, Grace: 2 * time.Second, RewriteBelow: server.DefaultGCPolicy.RewriteBelow},
	})
	index := store.NewIndex(px.cache, px.cache)
	local := func() (paths int, chunks uint64) {
		t.Helper()
		for _, p := range ps {
			d, err := store.ParsePathDigest(p.base[:32])
			if err != nil {
				t.Fatal(err)
			}
			switch _, err := index.Get(t.Context(), d); {
			case err == nil:
				paths++
			case !errors.Is(err, store.ErrNotFound):
				t.Fatal(err)
			}
		}
		st, err := px.cache.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return paths, st.Chunks
	}
	// waitFor polls until the cache holds no path of ps and no chunk.
	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			paths, chunks := local()
			if paths == 0 && chunks == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the cache still holds %d of the %d paths and %d chunks", what, paths, len(ps), chunks)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The bound is refused with a gRPC upstream, whose cache
	// --cache-size bounds.
	if _, err := startProxy(t.Context(), proxyConfig{upstream: "127.0.0.1:1", listen: "127.0.0.1:0", cache: filepath.Join(t.TempDir(), "c"),
		retention: server.RetentionPolicy{MaxSize: 1}}); err == nil || !strings.Contains(err.Error(), "--max-size apply to a binary cache upstream only") {
		t.Errorf("--max-size with a gRPC upstream: %v; want it refused", err)
	}

	copyClosureFrom(t, nix, base, trust, ps)
	waitFor("after the first copy")
	before := requests.Load()
	copyClosureFrom(t, nix, base, trust, ps)
	if n := requests.Load() - before; n < int64(len(ps)) {
		t.Errorf("second copy made %d requests to the upstream, want the NARs fetched anew (%d paths)", n, len(ps))
	}
	waitFor("after the second copy")
}
