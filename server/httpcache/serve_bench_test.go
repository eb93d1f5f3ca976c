package httpcache_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// BenchmarkServeNARWarm measures what serving a NAR costs the server once
// its decoded frames are on disk: the NAR (nix-store --dump of
// $NIXCAS_BENCH_TREE, else a synthetic tree) is ingested into a Pebble
// store, rendered once to keep its decoded frames, the store reopened
// (nothing in memory), one GET made to open and check the decoded files,
// then each iteration GETs the NAR over loopback from a client in a child
// process (this test binary, see TestServeBenchClient), so that the CPU
// time of the benchmark process is the server's alone. It reports the
// server's CPU seconds (user + system) per GiB served, beside MB/s;
// NIXCAS_BENCH_CPUPROFILE=FILE writes a CPU profile of the timed GETs
// alone:
//
//	NIXCAS_BENCH_TREE=/path/to/go1.22.0 go test -run '^$' -bench BenchmarkServeNARWarm -benchtime 10x ./server/httpcache/
func BenchmarkServeNARWarm(b *testing.B) {
	ctx := b.Context()
	nar := serveBenchNAR(b)
	dir := filepath.Join(b.TempDir(), "data")
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if err := narrender.Render(ctx, io.Discard, s, res.Root); err != nil {
		b.Fatal(err)
	}
	s.Close() // waits for the decoded frames to be written
	if s, err = pebblestore.Open(dir, pebblestore.Options{}); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	index := store.NewIndex(s, s)
	sum := sha256.Sum256(nar)
	p := &store.PathInfo{
		Path:      nixbase32.EncodeToString(sum[:20]) + "-bench",
		NARSize:   uint64(len(nar)),
		NARSha256: sum,
	}
	p.Root = res.Root
	p.Root.Name = p.Path
	if err := index.Put(ctx, p); err != nil {
		b.Fatal(err)
	}
	h, err := httpcache.New(httpcache.Options{CAS: s, Index: index})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(h)
	defer ts.Close()
	url := ts.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"

	// One GET opens and checks the decoded files; it must give the NAR.
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, nar) {
		b.Fatalf("GET %s: %d bytes, error %v; want the %d bytes of the NAR", url, len(got), err, len(nar))
	}

	b.SetBytes(int64(len(nar)))
	if file := os.Getenv("NIXCAS_BENCH_CPUPROFILE"); file != "" {
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	before := processCPU(b)
	b.ResetTimer()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^TestServeBenchClient$")
	cmd.Env = append(os.Environ(), "NIXCAS_SERVE_BENCH_URL="+url, "NIXCAS_SERVE_BENCH_GETS="+strconv.Itoa(b.N), "NIXCAS_SERVE_BENCH_SIZE="+strconv.Itoa(len(nar)))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("client: %v\n%s", err, out)
	}
	b.StopTimer()
	cpu := processCPU(b) - before
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(len(nar))/(1<<30)), "cpu-s/GiB")
	if st := s.DecodedCacheStats(); st.Misses != 0 {
		b.Fatalf("warm GETs decoded frames: %+v", st)
	}
}

// TestServeBenchClient is BenchmarkServeNARWarm's client: with
// NIXCAS_SERVE_BENCH_URL set it GETs that URL NIXCAS_SERVE_BENCH_GETS
// times and checks each body's length; otherwise it does nothing.
func TestServeBenchClient(t *testing.T) {
	url := os.Getenv("NIXCAS_SERVE_BENCH_URL")
	if url == "" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv("NIXCAS_SERVE_BENCH_GETS"))
	size, _ := strconv.ParseInt(os.Getenv("NIXCAS_SERVE_BENCH_SIZE"), 10, 64)
	for range n {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		k, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || k != size {
			t.Fatalf("GET %s: status %d, %d bytes, error %v; want %d bytes", url, resp.StatusCode, k, err, size)
		}
	}
}

// processCPU returns the CPU time (user + system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serveBenchNAR is nix-store --dump of $NIXCAS_BENCH_TREE, or of a
// synthetic tree of 48 files of 8 KiB to 3 MiB of pseudo-random bytes.
func serveBenchNAR(b *testing.B) []byte {
	tree := os.Getenv("NIXCAS_BENCH_TREE")
	if tree == "" {
		tree = b.TempDir()
		for i := range 48 {
			data := make([]byte, 8<<10+i*i*1400)
			x := uint64(i)*0x9e3779b97f4a7c15 + 1
			for j := range data {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				data[j] = byte(x)
			}
			if err := os.WriteFile(filepath.Join(tree, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	out, err := exec.CommandContext(context.Background(), "nix-store", "--dump", tree).Output()
	if err != nil {
		b.Fatalf("nix-store --dump %s: %v", tree, err)
	}
	return out
}
