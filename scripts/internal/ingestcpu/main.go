package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
)

// cpuTime is the user and system time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	dir := flag.String("data", "", "store directory (removed first)")
	frameSize := flag.Int("frame-size", 0, "hot frame size in bytes (0: the store's default)")
	level := flag.String("level", "default", "zstd level of hot frames: fastest, default, better, best")
	profile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	noFilter := flag.Bool("no-call-filter", false, "write frames without the x86 call filter")
	flag.Parse()
	if err := run(*dir, *frameSize, *level, *noFilter, *profile, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "ingestcpu:", err)
		os.Exit(1)
	}
}

func run(dir string, frameSize int, level string, noFilter bool, profile string, nars []string) error {
	if dir == "" || len(nars) == 0 {
		return fmt.Errorf("usage: ingestcpu -data DIR [-frame-size N] [-level L] NAR...")
	}
	ok, lvl := zstd.EncoderLevelFromString(level)
	if !ok {
		return fmt.Errorf("-level %q: want fastest, default, better or best", level)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	ctx := context.Background()
	s, err := pebblestore.Open(dir, pebblestore.Options{Frames: pebblestore.FrameOptions{Size: frameSize, Level: lvl, NoCallFilter: noFilter}})
	if err != nil {
		return err
	}
	defer s.Close()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var total uint64
	cpu0, wall0 := cpuTime(), time.Now()
	for _, path := range nars {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		res, err := narrender.Ingest(ctx, f, s, castore.WriterOptions{})
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if err := s.PackPending(ctx); err != nil {
			return err
		}
		st, err := s.Stats(ctx)
		if err != nil {
			return err
		}
		total += res.NARSize
		fmt.Printf("%s: %d NAR bytes, stored %d bytes so far, CPU %.2f s so far\n", path, res.NARSize, st.StoredBytes, (cpuTime() - cpu0).Seconds())
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("total: %d NAR bytes (%d unique chunk bytes), stored %d; CPU %.2f s = %.1f ns per NAR byte, %.1f ns per unique chunk byte; wall %.2f s = %.0f MB/s; allocated %d MB in %d GCs\n",
		total, st.UniqueChunkBytes, st.StoredBytes, cpu.Seconds(), float64(cpu)/float64(total), float64(cpu)/float64(st.UniqueChunkBytes),
		wall.Seconds(), float64(total)/wall.Seconds()/1e6, ms.TotalAlloc>>20, ms.NumGC)
	return nil
}
