package client_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// BenchmarkPull pulls a tree into an empty cache and directory from a
// real server on loopback whose chunks are all in hot frames: whole frames
// (the default) and chunk by chunk (NoFrames, as before frames could be
// read). The tree is the one in $NIXCAS_BENCH_TREE (a Go toolchain, say),
// else a synthetic tree of 300 files, 45 MB. Client and server share the
// process, so -cpuprofile shows both sides (and the ingest that makes
// the server's store); NIXCAS_BENCH_PULL_PROFILE=FILE profiles the pulls
// alone. cpu-s/op is the process's CPU time (user and system, both sides)
// per pull, which the load of the machine does not change:
//
//	NIXCAS_BENCH_TREE=/path/to/go1.22.0 go test -run XXX -bench BenchmarkPull -benchtime 1x -cpuprofile cpu.prof ./client
func BenchmarkPull(b *testing.B) {
	ctx := context.Background()
	s, err := pebblestore.Open(filepath.Join(b.TempDir(), "server"), pebblestore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var res narrender.Result
	if tree := os.Getenv("NIXCAS_BENCH_TREE"); tree != "" {
		r := client.DumpReader(tree)
		res = ingest(b, s, r)
		r.Close()
	} else {
		entries := testtree.Entries{}
		for i := range 300 {
			entries[fmt.Sprintf("f%03d", i)] = testtree.File(testtree.Mixed(uint64(i), int64(i%20+1)*15_000))
		}
		res = ingestNode(b, s, testtree.Dir(entries))
	}
	if err := s.PackPending(ctx); err != nil {
		b.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	addr := serve(b, s)
	for _, noFrames := range []bool{false, true} {
		name := "frames"
		if noFrames {
			name = "chunks"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(res.NARSize))
			stop := profilePulls(b, name)
			defer stop()
			cpu0 := cpuTime(b)
			for b.Loop() {
				cache, err := pebblestore.Open(filepath.Join(b.TempDir(), "cache"), pebblestore.Options{CacheSize: 16 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Off: true, DecodedCacheSize: -1}})
				if err != nil {
					b.Fatal(err)
				}
				c, err := client.Dial(addr, client.Options{Cache: cache, NoFrames: noFrames})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Pull(ctx, res.Root, filepath.Join(b.TempDir(), "out")); err != nil {
					b.Fatal(err)
				}
				c.Close()
				cache.Close()
			}
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
		})
	}
}

// cpuTime returns the CPU time, user and system, the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profilePulls starts a CPU profile of the pulls of sub-benchmark name
// into $NIXCAS_BENCH_PULL_PROFILE-name, when that is set, and returns
// the function that stops it.
func profilePulls(b *testing.B, name string) func() {
	file := os.Getenv("NIXCAS_BENCH_PULL_PROFILE")
	if file == "" {
		return func() {}
	}
	f, err := os.Create(file + "-" + name)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// serve serves s over gRPC on a loopback listener until b ends.
func serve(b *testing.B, s *pebblestore.Store) string {
	b.Helper()
	srv, err := grpcapi.NewServer(grpcapi.Options{CAS: s, Index: store.NewIndex(s, s), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(srv.Stop)
	return ln.Addr().String()
}
