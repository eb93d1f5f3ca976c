package bench

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/store"
)

// serveInProcess is ScaleOptions.Serve without a child process: the
// server `nixcas serve` runs (metrics included, background jobs off) on
// the store, HTTP over loopback.
func serveInProcess(t *testing.T) func(ctx context.Context, dir, keyFile string) (*ScaleServer, error) {
	return func(ctx context.Context, dir, keyFile string) (*ScaleServer, error) {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, err
		}
		key, err := signature.LoadSecretKey(string(b))
		if err != nil {
			return nil, err
		}
		start := time.Now()
		srv, err := server.New(server.Options{DataDir: dir, GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			SignKeys: []signature.SecretKey{key}, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, err
		}
		sctx, stop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- srv.Serve(sctx) }()
		return &ScaleServer{HTTP: "http://" + srv.HTTPAddr().String(), PID: os.Getpid(), Start: time.Since(start), Stop: sync.OnceValue(func() error {
			stop()
			return <-served
		})}, nil
	}
}

// TestScaleSmoke grows a small store through two sizes: the synthetic
// store holds exactly the chunks and paths asked for, every synthetic
// path's tree is complete (its PathInfo passes Index.Put's check), and
// every figure was measured.
func TestScaleSmoke(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	steps := []ScaleStep{{Paths: 1000, Chunks: 10000}, {Paths: 2000, Chunks: 21500}}
	res, err := Scale(ctx, ScaleOptions{Steps: steps, WorkDir: work, LargeMiB: 2, Window: 50 * time.Millisecond, Lookups: 200, Serve: serveInProcess(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != 2 {
		t.Fatalf("%d steps measured, want 2", len(res.Steps))
	}
	for _, r := range res.Steps {
		for name, v := range map[string]float64{
			"narinfo 1": r.NarInfo1.RPS, "narinfo 16": r.NarInfo16.RPS, "small NAR": r.NARSmallMBps,
			"medium NAR": r.NARMediumMBps, "large NAR": r.NARLargeMBps, "ingest": r.IngestMBps,
			"narinfo 16, first window": r.NarInfoCold16.RPS, "warm-up": r.WarmupSeconds,
			"lookup hit": r.LookupHitNs, "lookup miss": r.LookupMissNs, "index cache hits": r.LookupCacheHitPct,
			"meta per chunk": r.MetaBytesPerChunk, "meta per path": r.MetaBytesPerPath,
		} {
			if !(v > 0) {
				t.Errorf("%d paths: %s = %v, want > 0", r.Paths, name, v)
			}
		}
	}

	s, err := pebblestore.Open(filepath.Join(work, "scale-store"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The synthetic chunks plus the real NARs' chunks (fewer than 200).
	if st.Chunks < 21500 || st.Chunks > 21500+200 {
		t.Errorf("%d chunks in the store, want 21500 synthetic and the real NARs'", st.Chunks)
	}
	x := store.NewIndex(s, s)
	n, err := x.CountPaths(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 2000 synthetic paths, three served, one ingested at each step.
	if n != 2000+3+2 {
		t.Errorf("%d paths, want 2005", n)
	}
	for _, i := range []int{0, 1, 999, 1000, 1499, 1500, 1999} {
		name := scalePathName(i)
		d, err := store.ParsePathDigest(name[:32])
		if err != nil {
			t.Fatal(err)
		}
		p, err := x.Get(ctx, d)
		if err != nil {
			t.Fatalf("path %d: %v", i, err)
		}
		if p.Path != name || len(p.Signatures) != 1 {
			t.Errorf("path %d: %s with %d signatures", i, p.Path, len(p.Signatures))
		}
		if err := store.CheckTree(ctx, s, p.Root); err != nil {
			t.Errorf("path %d: %v", i, err)
		}
		dir, err := s.GetDirectory(ctx, p.Root.Digest)
		if err != nil {
			t.Fatal(err)
		}
		var chunks int
		for _, f := range dir.Files {
			refs, err := castore.BlobChunks(ctx, s, f.Digest, f.Size)
			if err != nil {
				t.Fatal(err)
			}
			chunks += len(refs)
		}
		// 10 each at first; then 11500 new chunks over 1000 new
		// paths: 11 each, one more on the first 500.
		want := 10
		switch {
		case i >= 1500:
			want = 11
		case i >= 1000:
			want = 12
		}
		if chunks != want {
			t.Errorf("path %d has %d chunks, want %d", i, chunks, want)
		}
	}

	var md bytes.Buffer
	res.WriteMarkdown(&md)
	if !strings.Contains(md.String(), "| narinfo p50, 16 connections (µs) |") || !strings.Contains(md.String(), "2k paths, 21500 chunks") {
		t.Errorf("table:\n%s", md.String())
	}
	svg := filepath.Join(work, "scale.svg")
	if err := res.WriteChart(svg); err != nil {
		t.Fatal(err)
	}
	if err := res.WriteChart(filepath.Join(work, "scale.png")); err == nil {
		t.Error("chart into a .png: no error")
	}
}

// TestScaleStepsInvalid: the steps must grow and have at least a chunk a
// path.
func TestScaleStepsInvalid(t *testing.T) {
	for _, steps := range [][]ScaleStep{
		nil,
		{{Paths: 0, Chunks: 10}},
		{{Paths: 10, Chunks: 5}},
		{{Paths: 100, Chunks: 1000}, {Paths: 50, Chunks: 2000}},
		{{Paths: 100, Chunks: 1000}, {Paths: 200, Chunks: 500}},
	} {
		if _, err := Scale(context.Background(), ScaleOptions{Steps: steps, WorkDir: t.TempDir()}); err == nil {
			t.Errorf("steps %v: no error", steps)
		}
	}
}

// TestLoadGETsLateStart checks that a window over before the connections
// start (as on a busy machine) still measures one request per connection.
func TestLoadGETsLateStart(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	next := func(*rand.Rand) string { return srv.URL + "/x.narinfo" }
	lat, err := LoadGETs(context.Background(), srv.Client(), 4, 0, next, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lat.Requests != 4 || !(lat.RPS > 0) {
		t.Fatalf("window 0 on 4 connections: %d requests at %v/s, want 4 at a rate above 0", lat.Requests, lat.RPS)
	}
}
