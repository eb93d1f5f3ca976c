package main

// End-to-end tests of the server's limits on slow, idle and greedy
// clients: the real binary as a subprocess, clients on loopback.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
)

// processRSS returns the resident set size of process pid, in bytes.
func processRSS(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

// metric returns the value of a sample of /metrics (name with its labels
// as Prometheus prints them), 0 when absent. It uses a connection of its
// own, closed after the request.
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

// waitFor polls cond every 50 ms until it holds, failing after guard.
func waitFor(t *testing.T, guard time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, guard)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closedByPeer reports whether the server closed c: a read returns EOF or
// a reset, rather than timing out.
func closedByPeer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestServeIdleConnections holds 2,000 idle connections against a server
// capped at 1,000: half made one keep-alive request, half never sent a
// byte. New requests are still answered, the oldest idle connections make
// room, the rest are cut at the idle and header timeouts, and the
// server's RSS stays small.
//
// Not parallel: it bounds the server's RSS and holds 2,000 connections
// against timeouts of 5 s.
func TestServeIdleConnections(t *testing.T) {
	const (
		idle    = 2000
		maxConn = 1000
	)
	srv := startGRPCServe(t, filepath.Join(t.TempDir(), "data"),
		"--http-max-conns", strconv.Itoa(maxConn), "--http-idle-timeout", "5s", "--http-header-timeout", "5s")
	base := "http://" + srv.httpAddr
	pid := srv.cmd.Process.Pid

	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range idle {
		c, err := net.Dial("tcp", srv.httpAddr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 1 {
			continue // sends nothing
		}
		// One request, then idle on keep-alive. Connections evicted
		// meanwhile fail here; they count among the cut ones below.
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "GET /nix-cache-info HTTP/1.1\r\nHost: nixcas\r\n\r\n"); err == nil {
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		c.SetDeadline(time.Time{})
	}

	// Normal requests, each on a new connection, while the idle ones are
	// held.
	var lat []time.Duration
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	for range 20 {
		start := time.Now()
		resp, err := client.Get(base + "/nix-cache-info")
		if err != nil {
			t.Fatalf("a request beside %d idle connections: %v", idle, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("StoreDir")) {
			t.Fatalf("a request beside %d idle connections: %v %v %q", idle, resp.Status, err, body)
		}
	}
	slices.Sort(lat)
	rss := processRSS(t, pid)
	open := metric(t, base, `nixcas_connections_open{listener="http"}`)
	evicted := metric(t, base, `nixcas_connections_limited_total{listener="http",reason="evicted-idle"}`)
	t.Logf("beside %d idle connections: request latency median %v, max %v; server RSS %.1f MiB; %v connections open, %v idle ones evicted",
		idle, lat[len(lat)/2], lat[len(lat)-1], float64(rss)/(1<<20), open, evicted)
	if rss > 300<<20 {
		t.Errorf("server RSS %d bytes, want under 300 MiB", rss)
	}
	if open > maxConn {
		t.Errorf("%v HTTP connections open, cap %d", open, maxConn)
	}
	if evicted < idle-maxConn {
		t.Errorf("%v idle connections evicted, want at least %d", evicted, idle-maxConn)
	}

	// The rest are cut at the idle (keep-alive) or header (never sent a
	// byte) timeout.
	waitFor(t, 60*time.Second, "idle connections closed", func() bool {
		return metric(t, base, `nixcas_connections_open{listener="http"}`) <= 1 // the scrape's own
	})
	for i, c := range conns {
		if !closedByPeer(c, 10*time.Second) {
			t.Fatalf("idle connection %d still open", i)
		}
	}
}

// request sends a request on a new connection and returns the response
// (its body unread) and the connection.
func request(t *testing.T, addr, method, path string, header map[string]string, body []byte) (*http.Response, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: nixcas\r\n", method, path)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(append([]byte(b.String()), body...)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, c
}

// TestServeSlowUpload: an upload that stops sending is cut after
// --http-body-timeout, and while it holds the only upload slot another
// upload is answered 503 with Retry-After.
func TestServeSlowUpload(t *testing.T) {
	t.Parallel()
	srv := startGRPCServe(t, filepath.Join(t.TempDir(), "data"), "--http-body-timeout", "6s", "--max-uploads", "1")
	slow, err := net.Dial("tcp", srv.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "PUT /nar/slow.nar HTTP/1.1\r\nHost: nixcas\r\nContent-Length: 1000000\r\n\r\nnix-arc"); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	// Only once the server has the slow upload in hand: on a loaded
	// machine the second request could otherwise take the slot first and
	// turn the slow one away.
	waitFor(t, 30*time.Second, "the slow upload in progress", func() bool {
		return metric(t, "http://"+srv.httpAddr, `nixcas_http_in_progress{kind="upload"}`) == 1
	})

	// The slow upload holds the slot: another upload is turned away.
	resp, _ := request(t, srv.httpAddr, "PUT", "/nar/other.nar", map[string]string{"Content-Length": "3"}, []byte("nix"))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a second upload while the slow one holds the only slot: %s, want 503", resp.Status)
	}
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("503 with Retry-After %q, want 5", got)
	}

	// The slow upload is cut: the server answers 408 and closes.
	slow.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatalf("slow upload: %v", err)
	}
	t.Logf("slow upload answered %s %v after its last byte", got.Status, time.Since(sent).Round(time.Millisecond))
	if got.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow upload answered %s, want 408", got.Status)
	}
	if !closedByPeer(slow, 30*time.Second) {
		t.Error("slow upload's connection still open")
	}
	// The slot is free again: a bad NAR gets its 400.
	waitFor(t, 30*time.Second, "the upload slot freed", func() bool {
		resp, _ := request(t, srv.httpAddr, "PUT", "/nar/other.nar", map[string]string{"Content-Length": "3"}, []byte("nix"))
		return resp.StatusCode == http.StatusBadRequest
	})
}

// TestServeChunkCounters checks nixcas_chunks_stored_total against
// `store stats` after an HTTP upload by Nix and after a gRPC push, and
// that pushed files count in logicalBytes.
func TestServeChunkCounters(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	testtree.Build(t, tree, grpcEdgeCase(t, "package-like"))

	// HTTP: nix copy --to the binary cache.
	nixStore := filepath.Join(dir, "nix")
	storePath := grpcNix(t, nixStore, "nix-store", "--add", tree)
	httpData := &e2eStore{dir: filepath.Join(dir, "http")}
	srv := startGRPCServe(t, httpData.dir)
	grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "http://"+srv.httpAddr+"?compression=none", storePath)
	stored := metric(t, "http://"+srv.httpAddr, "nixcas_chunks_stored_total")
	srv.stop(t)
	st := httpData.stats(t)
	t.Logf("after nix copy --to: nixcas_chunks_stored_total %v, store stats %+v", stored, st)
	if stored == 0 || int64(stored) != st.Chunks {
		t.Errorf("after an HTTP upload: nixcas_chunks_stored_total %v, store stats chunks %d", stored, st.Chunks)
	}

	// gRPC: push of the same tree into another store.
	grpcData := &e2eStore{dir: filepath.Join(dir, "grpc")}
	srv = startGRPCServe(t, grpcData.dir)
	grpcPush(t, "--server", srv.grpcAddr, "--cache", filepath.Join(dir, "cache"), tree)
	stored = metric(t, "http://"+srv.httpAddr, "nixcas_chunks_stored_total")
	srv.stop(t)
	st = grpcData.stats(t)
	t.Logf("after push: nixcas_chunks_stored_total %v, store stats %+v", stored, st)
	if stored == 0 || int64(stored) != st.Chunks {
		t.Errorf("after a push: nixcas_chunks_stored_total %v, store stats chunks %d", stored, st.Chunks)
	}
	if st.LogicalBytes < st.UniqueChunkBytes {
		t.Errorf("after a push: logicalBytes %d below uniqueChunkBytes %d", st.LogicalBytes, st.UniqueChunkBytes)
	}
	// Every distinct file counts once.
	var distinct int64
	seen := map[[32]byte]bool{}
	filepath.Walk(tree, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if d := castore.Hash(b); !seen[d] {
				seen[d] = true
				distinct += int64(len(b))
			}
		}
		return nil
	})
	if st.LogicalBytes != distinct {
		t.Errorf("after a push: logicalBytes %d, want the %d bytes of the distinct files", st.LogicalBytes, distinct)
	}
}
