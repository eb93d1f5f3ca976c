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
// store, rendered until every frame is kept decoded, the store reopened
// (nothing in memory), one GET made to open and check the decoded files,
// then each iteration GETs the NAR over loopback from a client in a child
// process (this test binary, see TestServeBenchClient), so that the CPU
// time of the benchmark process is the server's alone. It reports the
// server's CPU seconds (user + system) per GiB served and its voluntary
// context switches per GET, beside MB/s;
// NIXCAS_BENCH_CPUPROFILE=FILE writes a CPU profile of the timed GETs
// alone:
//
//	NIXCAS_BENCH_TREE=/path/to/go1.22.0 go test -run '^$' -bench BenchmarkServeNARWarm -benchtime 10x ./server/httpcache/
func BenchmarkServeNARWarm(b *testing.B) {
	nar := serveBenchNAR(b)
	w := newWarmServer(b, nar, httpcache.Options{TreeCacheSize: 64 << 20}) // as nixcas serve does
	s, url := w.store, w.url

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
	before, switchesBefore := processCPU(b)
	b.ResetTimer()
	cmd := exec.CommandContext(b.Context(), os.Args[0], "-test.run", "^TestServeBenchClient$")
	cmd.Env = append(os.Environ(), "NIXCAS_SERVE_BENCH_URL="+url, "NIXCAS_SERVE_BENCH_GETS="+strconv.Itoa(b.N), "NIXCAS_SERVE_BENCH_SIZE="+strconv.Itoa(len(nar)))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("client: %v\n%s", err, out)
	}
	b.StopTimer()
	after, switchesAfter := processCPU(b)
	cpu := after - before
	b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(len(nar))/(1<<30)), "cpu-s/GiB")
	b.ReportMetric(float64(switchesAfter-switchesBefore)/float64(b.N), "vcsw/op")
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

// processCPU returns the CPU time (user + system) this process has used,
// and the voluntary context switches of its threads: how often a thread
// gave up its core to wait (preemptions, which follow the machine's load,
// are left out).
func processCPU(b *testing.B) (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw
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

// warmServer serves one NAR from a Pebble store whose decoded frames are
// on disk, reopened since they were written (nothing in memory): what a
// restarted server that served the NAR before has.
type warmServer struct {
	dir   string
	store *pebblestore.Store
	root  castore.Entry
	url   string // of the NAR
	base  string // of the server
}

// newWarmServer ingests nar into a new store, renders it until it has
// kept every frame decoded, closes the store and serves it reopened with the options o (CAS and Index set
// here).
func newWarmServer(t testing.TB, nar []byte, o httpcache.Options) *warmServer {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Render until every frame has its decoded file: a busy machine's
	// writer skips frames it falls behind on, and a render after a reopen
	// decodes (and keeps) only those.
	for attempt := 0; ; attempt++ {
		if err := narrender.Render(ctx, io.Discard, s, res.Root); err != nil {
			t.Fatal(err)
		}
		misses := s.DecodedCacheStats().Misses
		s.Close() // waits for the decoded frames to be written
		if attempt > 0 && misses == 0 {
			break
		}
		if attempt == 5 {
			t.Fatalf("the decoded frames are still not all kept after %d renders", attempt+1)
		}
		if s, err = pebblestore.Open(dir, pebblestore.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	w := &warmServer{dir: dir, root: res.Root}
	w.open(t, nar, o)
	return w
}

// open (re)opens the store and serves it.
func (w *warmServer) open(t testing.TB, nar []byte, o httpcache.Options) {
	t.Helper()
	ctx := context.Background()
	s, err := pebblestore.Open(w.dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	index := store.NewIndex(s, s)
	sum := sha256.Sum256(nar)
	p := &store.PathInfo{
		Path:      nixbase32.EncodeToString(sum[:20]) + "-warm",
		NARSize:   uint64(len(nar)),
		NARSha256: sum,
	}
	p.Root = w.root
	p.Root.Name = p.Path
	if err := index.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	o.CAS, o.Index = s, index
	h, err := httpcache.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	w.store, w.base = s, ts.URL
	w.url = ts.URL + "/nar/" + nixbase32.EncodeToString(sum[:]) + ".nar"
}
