package pebblestore_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// firstByteSender is a discardSender that notes when it is first written
// to (the renderer writes in pieces of up to 256 KiB).
type firstByteSender struct {
	discardSender
	once  sync.Once
	first time.Time
}

func (w *firstByteSender) Write(p []byte) (int, error) {
	w.once.Do(func() { w.first = time.Now() })
	return len(p), nil
}

func (w *firstByteSender) SendFile(f *os.File, n int64) (int64, error) {
	w.once.Do(func() { w.first = time.Now() })
	return w.discardSender.SendFile(f, n)
}

// benchPostgresRender renders the tree at root (files of them) from the
// store in dir on url, opened afresh for each iteration, and reports the
// round trips, wall time, this process's and PostgreSQL's CPU time per
// file, and the time to the renderer's first write.
func benchPostgresRender(b *testing.B, url, dir string, opts pebblestore.Options, root castore.Entry, files int) {
	ctx := context.Background()
	var rt roundTrips
	pebblestore.SetPostgresTracer(&rt)
	defer pebblestore.SetPostgresTracer(nil)
	var trips int64
	var wall, first, client, server time.Duration
	for range b.N {
		s, err := pebblestore.OpenPostgres(ctx, url, dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		rt.trips.Store(0)
		var w firstByteSender
		cpu0, srv0, t0 := selfCPU(), serverCPU(b, url), time.Now()
		if err := narrender.Render(ctx, &w, s, root); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(t0)
		first += w.first.Sub(t0)
		client += selfCPU() - cpu0
		server += serverCPU(b, url) - srv0
		trips += rt.trips.Load()
		s.Close()
	}
	n := float64(b.N * files)
	b.ReportMetric(float64(trips)/n, "trips/file")
	b.ReportMetric(float64(wall.Microseconds())/n, "wall-us/file")
	b.ReportMetric(float64(client.Microseconds())/n, "client-cpu-us/file")
	b.ReportMetric(float64(server.Microseconds())/n, "pg-cpu-us/file")
	b.ReportMetric(float64(first.Microseconds())/float64(b.N), "first-write-us")
}

// BenchmarkPostgresRenderHugeDir renders a NAR of one directory of
// 10,000 small files from a store on PostgreSQL, frames packed and
// decoded, to a writer that sends files (see
// BenchmarkPostgresRenderSmallFiles), and reports also the time to the
// renderer's first write, which a look-up of the whole directory ahead
// delays.
func BenchmarkPostgresRenderHugeDir(b *testing.B) {
	const n = 10000
	files := testtree.Entries{}
	for i := range n {
		files[fmt.Sprintf("f%05d", i)] = testtree.File(testtree.Random(uint64(i), int64(500+i%1000)))
	}
	url, dir, root, _ := packedPostgresTree(b, testtree.Dir(files))
	b.ResetTimer()
	benchPostgresRender(b, url, dir, pebblestore.Options{}, root, n)
}

// BenchmarkPostgresRenderUnpacked renders a NAR of 2,000 small files in
// 20 directories whose chunks are in no frame yet (queued for the
// packer, each stored in its record: the store's hot frames are larger
// than the tree), to a writer that sends files.
func BenchmarkPostgresRenderUnpacked(b *testing.B) {
	const dirs, perDir = 20, 100
	tree := smallFilesTree(dirs, perDir)
	var buf bytes.Buffer
	if err := testtree.WriteNAR(&buf, testtree.Dir(tree)); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	url, dir := testpg.New(b), b.TempDir()
	opts := pebblestore.Options{Frames: pebblestore.DefaultFrameOptions}
	opts.Frames.Size = 32 << 20
	s, err := pebblestore.OpenPostgres(ctx, url, dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	res, err := narrender.Ingest(ctx, bytes.NewReader(buf.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	benchPostgresRender(b, url, dir, opts, res.Root, dirs*perDir)
}
