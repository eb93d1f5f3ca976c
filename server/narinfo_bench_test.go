package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server"
	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

// benchPaths is how many store paths BenchmarkNarInfo serves narinfos of.
const benchPaths = 1000

// BenchmarkNarInfo measures narinfo requests over loopback HTTP, client
// and server in this process, at 1 and 16 keep-alive connections:
//
//	static   a bare net/http server answering every request with the same
//	         narinfo bytes: the floor of net/http and of the client
//	handler  httpcache.New alone over a Pebble store, as scripts/bench-http.sh
//	         serves it
//	serve    server.New as `nixcas serve` runs it: text access log (to a
//	         file), metrics, connection limits and timeouts, one signing
//	         key, the narinfo cache
//	serve-quiet  the same without the access log (--log-level warn), as
//	         scripts/bench-http.sh serves it
//
// Besides ns/op it reports req/s, the process's CPU time per request
// (client and server together; user + system, from getrusage) and heap
// allocations per request. Run with
//
//	go test -run '^$' -bench BenchmarkNarInfo -benchtime 20000x ./server
func BenchmarkNarInfo(b *testing.B) {
	dir := b.TempDir()
	key := benchKey(b)
	paths := fillBenchStore(b, filepath.Join(dir, "data"), key)
	logFile, err := os.Create(filepath.Join(dir, "access.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()

	static := func(b *testing.B) string {
		text := []byte("StorePath: /nix/store/" + paths[0] + "\nURL: nar/x.nar\nCompression: none\n")
		return serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/x-nix-narinfo")
			w.Write(text)
		}))
	}
	handler := func(b *testing.B) string {
		s, err := pebblestore.Open(filepath.Join(dir, "data"), pebblestore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		h, err := httpcache.New(httpcache.Options{CAS: s, Index: store.NewIndex(s, s)})
		if err != nil {
			b.Fatal(err)
		}
		return serveHTTP(b, h)
	}
	serveWith := func(b *testing.B, log *slog.Logger) string {
		srv, err := server.New(server.Options{
			DataDir: filepath.Join(dir, "data"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			SignKeys: []signature.SecretKey{key},
			Logger:   log,
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		b.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.Error(err)
			}
		})
		return "http://" + srv.HTTPAddr().String()
	}
	serve := func(b *testing.B) string { return serveWith(b, slog.New(slog.NewTextHandler(logFile, nil))) }
	quiet := func(b *testing.B) string { return serveWith(b, nil) }
	for _, stack := range []struct {
		name  string
		start func(*testing.B) string
	}{{"static", static}, {"handler", handler}, {"serve", serve}, {"serve-quiet", quiet}} {
		for _, conns := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/conns=%d", stack.name, conns), func(b *testing.B) {
				base := stack.start(b)
				urls := make([]string, len(paths))
				for i, p := range paths {
					urls[i] = base + "/" + p[:32] + ".narinfo"
				}
				loadNarInfos(b, urls, conns)
			})
		}
	}
}

// serveHTTP serves h on a loopback port until the benchmark ends and
// returns its URL.
func serveHTTP(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	b.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

// loadNarInfos makes b.N GETs of urls, round robin, on conns keep-alive
// connections, checking each answer is 200 with a body, and reports the
// request rate, CPU time and allocations per request.
func loadNarInfos(b *testing.B, urls []string, conns int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	var next atomic.Int64
	var failed atomic.Value
	work := func() {
		buf := make([]byte, 4096)
		for {
			i := next.Add(1) - 1
			if i >= int64(b.N) {
				return
			}
			resp, err := client.Get(urls[int(i)%len(urls)])
			if err != nil {
				failed.CompareAndSwap(nil, err)
				return
			}
			n, _ := io.ReadFull(resp.Body, buf)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n == 0 {
				failed.CompareAndSwap(nil, fmt.Errorf("GET %s: %s, %d bytes", urls[int(i)%len(urls)], resp.Status, n))
				return
			}
		}
	}
	// One request per connection first, so that dialing is not measured.
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			resp, err := client.Get(urls[0])
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := processCPU(b)
	b.ResetTimer()
	start := time.Now()
	for range conns {
		wg.Go(work)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := processCPU(b) - cpu0
	runtime.ReadMemStats(&ms1)
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/req")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/req")
}

// processCPU returns the user and system CPU time this process used so
// far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchKey(b *testing.B) signature.SecretKey {
	sk, _, err := signature.GenerateKeypair("bench-1", nil)
	if err != nil {
		b.Fatal(err)
	}
	return sk
}

// fillBenchStore stores benchPaths small store paths, each referring to
// three others and signed with key, in a new store in dir, and returns
// their base names.
func fillBenchStore(b *testing.B, dir string, key signature.SecretKey) []string {
	ctx := context.Background()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	signer, err := store.NewSigner(key)
	if err != nil {
		b.Fatal(err)
	}
	x := store.NewIndex(s, s, store.WithSigner(signer))
	names := make([]string, benchPaths)
	for i := range names {
		var d store.PathDigest
		binary.BigEndian.PutUint64(d[:], uint64(i)+1)
		names[i] = nixbase32.EncodeToString(d[:]) + fmt.Sprintf("-bench-path-%d", i)
	}
	for i, name := range names {
		var nar []byte
		for _, tok := range []string{"nix-archive-1", "(", "type", "regular", "contents", name, ")"} {
			nar = binary.LittleEndian.AppendUint64(nar, uint64(len(tok)))
			nar = append(nar, tok...)
			nar = append(nar, make([]byte, (8-len(tok)%8)%8)...)
		}
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
		if err != nil {
			b.Fatal(err)
		}
		root := res.Root
		root.Name = name
		refs := []string{names[(i+1)%len(names)], names[(i+2)%len(names)], names[(i+3)%len(names)]}
		p := &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256,
			References: slices.Sorted(slices.Values(refs)), Deriver: names[(i+4)%len(names)][:33] + "bench.drv"}
		if err := x.Put(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	return names
}
