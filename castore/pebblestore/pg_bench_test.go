package pebblestore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/s3objects"
	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// roundTrips counts what a store sends PostgreSQL: round trips (a query,
// or a pipeline of them) and statements.
type roundTrips struct {
	trips, statements atomic.Int64
	mu                sync.Mutex
	by                map[string]int // trips by their first statement
}

func (r *roundTrips) count(sql string) {
	sql = strings.Join(strings.Fields(sql), " ")
	if len(sql) > 70 {
		sql = sql[:70]
	}
	r.mu.Lock()
	if r.by == nil {
		r.by = map[string]int{}
	}
	r.by[sql]++
	r.mu.Unlock()
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.trips.Add(1)
	r.statements.Add(1)
	r.count(d.SQL)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.trips.Add(1)
	return ctx
}
func (r *roundTrips) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	r.statements.Add(1)
	r.count("batch: " + d.SQL)
}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// serverCPU returns the CPU time of the PostgreSQL server at url: its
// postmaster and every process it started that is still running.
func serverCPU(b *testing.B, url string) time.Duration {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var dataDir string
	if err := conn.QueryRow(context.Background(), "SHOW data_directory").Scan(&dataDir); err != nil {
		b.Fatal(err)
	}
	pidFile, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		b.Fatal(err)
	}
	master, _ := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15)
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		ppid, _ := strconv.Atoi(f[1])
		if pid != master && ppid != master {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPostgresIngest ingests a NAR (NIXCAS_BENCH_NAR, else a
// synthetic tree of many small files and some large ones) into a fresh
// store on PostgreSQL with its frames in MinIO, packing every chunk, as
// `nixcas nar ingest --meta --blobs` does, and reports the round trips
// and statements sent per MiB of NAR, and the CPU time of this process
// and of the PostgreSQL server per GiB.
func BenchmarkPostgresIngest(b *testing.B) {
	var nar []byte
	if f := os.Getenv("NIXCAS_BENCH_NAR"); f != "" {
		var err error
		if nar, err = os.ReadFile(f); err != nil {
			b.Fatal(err)
		}
	} else {
		files := testtree.Entries{}
		for i := range 300 {
			files[fmt.Sprintf("small%03d", i)] = testtree.File(testtree.Random(uint64(i), int64(3000+i*20)))
		}
		for i := range 8 {
			files[fmt.Sprintf("large%d", i)] = testtree.File(testtree.Random(uint64(1000+i), 1<<20))
		}
		var buf bytes.Buffer
		if err := testtree.WriteNAR(&buf, testtree.Dir(testtree.Entries{"a": testtree.Dir(files)})); err != nil {
			b.Fatal(err)
		}
		nar = buf.Bytes()
	}
	m := testminio.Start(b)
	ctx := context.Background()
	var rt roundTrips
	pebblestore.SetPostgresTracer(&rt)
	defer pebblestore.SetPostgresTracer(nil)
	b.SetBytes(int64(len(nar)))
	var trips, statements int64
	var client, server time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		url := testpg.New(b)
		c, err := s3objects.ParseURL(m.URL(fmt.Sprintf("bench%d", i), ""))
		if err != nil {
			b.Fatal(err)
		}
		objects, err := s3objects.Open(ctx, c, s3objects.Options{Credentials: m.Credentials()})
		if err != nil {
			b.Fatal(err)
		}
		s, err := pebblestore.OpenPostgres(ctx, url, b.TempDir(), pebblestore.Options{Objects: objects, RecordUses: true})
		if err != nil {
			b.Fatal(err)
		}
		rt.trips.Store(0)
		rt.statements.Store(0)
		cpu0, srv0 := selfCPU(), serverCPU(b, url)
		b.StartTimer()
		if _, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := s.PackPending(ctx); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		client += selfCPU() - cpu0
		server += serverCPU(b, url) - srv0
		trips += rt.trips.Load()
		statements += rt.statements.Load()
		s.Close()
		b.StartTimer()
	}
	if testing.Verbose() {
		for sql, n := range rt.by {
			b.Logf("%8d  %s", n, sql)
		}
	}
	mib := float64(len(nar)) / (1 << 20) * float64(b.N)
	gib := mib / 1024
	b.ReportMetric(float64(trips)/mib, "trips/MiB")
	b.ReportMetric(float64(statements)/mib, "statements/MiB")
	b.ReportMetric(client.Seconds()/gib, "client-cpu-s/GiB")
	b.ReportMetric(server.Seconds()/gib, "pg-cpu-s/GiB")
}

// BenchmarkPostgresRenderSmallFiles renders a NAR of 2,000 small files
// in 20 directories from a store on PostgreSQL (frames packed and
// decoded on local disk), each iteration on the store opened afresh, so
// that nothing of the tree is in memory, to a writer that sends files as
// the HTTP server's does (narrender.FileSender), so that small files are
// read from the decoded frame files: "cold" is the first render
// after the open, "warm" a second one on the same open store (which, on
// PostgreSQL, remembers no chunk place either: see chunkplace.go). It
// reports the round trips per file of the render measured, the wall time
// per file, and the CPU time of this process and of the PostgreSQL
// server per file; with -v, the statements sent.
func BenchmarkPostgresRenderSmallFiles(b *testing.B) {
	const dirs, perDir = 20, 100
	tree := smallFilesTree(dirs, perDir)
	ctx := context.Background()
	url, dir, root, _ := packedPostgresTree(b, testtree.Dir(tree))

	var rt roundTrips
	pebblestore.SetPostgresTracer(&rt)
	defer pebblestore.SetPostgresTracer(nil)
	for _, kind := range []string{"cold", "warm"} {
		b.Run(kind, func(b *testing.B) {
			var trips int64
			var wall, client, server time.Duration
			for range b.N {
				s, err := pebblestore.OpenPostgres(ctx, url, dir, pebblestore.Options{})
				if err != nil {
					b.Fatal(err)
				}
				renders := 1
				if kind == "warm" {
					renders = 2
				}
				for r := range renders {
					rt.trips.Store(0)
					rt.mu.Lock()
					rt.by = nil
					rt.mu.Unlock()
					cpu0, srv0, t0 := selfCPU(), serverCPU(b, url), time.Now()
					if err := narrender.Render(ctx, discardSender{}, s, root); err != nil {
						b.Fatal(err)
					}
					if r == renders-1 {
						wall += time.Since(t0)
						client += selfCPU() - cpu0
						server += serverCPU(b, url) - srv0
						trips += rt.trips.Load()
					}
				}
				s.Close()
			}
			if testing.Verbose() {
				for sql, n := range rt.by {
					b.Logf("%8d  %s", n, sql)
				}
			}
			files := float64(b.N * dirs * perDir)
			b.ReportMetric(float64(trips)/files, "trips/file")
			b.ReportMetric(float64(wall.Microseconds())/files, "wall-us/file")
			b.ReportMetric(float64(client.Microseconds())/files, "client-cpu-us/file")
			b.ReportMetric(float64(server.Microseconds())/files, "pg-cpu-us/file")
		})
	}
}

// discardSender is a narrender.FileSender that discards what it is sent.
type discardSender struct{}

func (discardSender) Write(p []byte) (int, error) { return len(p), nil }

func (discardSender) SendFile(f *os.File, n int64) (int64, error) {
	return io.CopyN(io.Discard, f, n)
}

// smallFilesTree is dirs directories of perDir files of 1,000 to 3,999
// random bytes each.
func smallFilesTree(dirs, perDir int) testtree.Entries {
	tree := testtree.Entries{}
	for i := range dirs {
		files := testtree.Entries{}
		for j := range perDir {
			files[fmt.Sprintf("f%03d", j)] = testtree.File(testtree.Random(uint64(i*perDir+j), int64(1000+(i*perDir+j)%3000)))
		}
		tree[fmt.Sprintf("d%02d", i)] = testtree.Dir(files)
	}
	return tree
}
