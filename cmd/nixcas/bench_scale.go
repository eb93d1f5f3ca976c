package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
)

func newBenchScaleCommand() *cobra.Command {
	var (
		o              bench.ScaleOptions
		paths, chunks  []string
		jsonOut, chart string
		indexCache     sizeValue
	)
	cmd := &cobra.Command{
		Use:   "scale --paths N[,N...] [--chunks M[,M...]] [--large-mib N] [--window D] [--index-cache SIZE] [--json FILE] [--chart FILE.svg] [--work DIR]",
		Short: "Serving, ingest and lookup figures of a store as it grows to millions of paths",
		Long: `Build a store that grows through the given sizes (--paths 10k,100k,1M with
--chunks 100k,1M,10M: every size N paths and M chunks) and measure each:
narinfo latency and requests per second at 1 and 16 connections, NAR
download throughput of a 10 KiB, a 5 MiB and a --large-mib path, ingest of
a new --large-mib NAR, chunk lookups, the server's start time and RSS, and
the metadata bytes on disk per path and per chunk.

The bulk of the store is synthetic and made without NARs: chunk index
entries pointing into one frame that is never written (their bytes cannot
be read), and for each path a blob index of its 64 KiB chunks, a directory
of up to three small one-chunk files and that blob, and a signed PathInfo
with references to up to five earlier paths, all written in Pebble batches
on a worker per core. The NARs downloaded and ingested are real: trees of
files whose content compresses about 2:1, dumped and ingested as any NAR.
The server is "nixcas serve" run as a child process on the store (after
the store is closed), reached over loopback HTTP, its access log written
to WORK/serve.log. Narinfo is measured in the first window after the
server starts, then again after a warm-up that fills its index cache
(--index-cache, also the cache of the store the bench builds), as a
running server's is.

Every figure's step prints the load average at its start and end: on a
shared machine the timings move with it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ps, err := parseCounts(paths)
			if err != nil {
				return fmt.Errorf("--paths: %w", err)
			}
			cs, err := parseCounts(chunks)
			if err != nil {
				return fmt.Errorf("--chunks: %w", err)
			}
			if len(cs) == 0 {
				for _, p := range ps {
					cs = append(cs, 10*p)
				}
			}
			if len(cs) != len(ps) {
				return errors.New("give as many --chunks as --paths")
			}
			for i := range ps {
				o.Steps = append(o.Steps, bench.ScaleStep{Paths: ps[i], Chunks: cs[i]})
			}
			cleanup, err := scratchDir(&o.WorkDir, "nixcas-bench-scale-")
			if err != nil {
				return err
			}
			defer cleanup()
			o.Log = os.Stderr
			o.IndexCache = int64(indexCache)
			o.Serve = func(ctx context.Context, dir, signKey string) (*bench.ScaleServer, error) {
				return serveChild(ctx, dir, signKey, o.IndexCache)
			}
			res, err := bench.Scale(cmd.Context(), o)
			if err != nil {
				return err
			}
			return writeBenchResult(res, jsonOut, chart)
		},
	}
	cmd.Flags().StringSliceVar(&paths, "paths", []string{"10k", "100k"}, "store sizes in paths, increasing (k and M suffixes allowed)")
	cmd.Flags().StringSliceVar(&chunks, "chunks", nil, "chunks at each size (default: 10 per path)")
	cmd.Flags().IntVar(&o.LargeMiB, "large-mib", 200, "size of the large NAR downloaded and of the NAR ingested at each size, MiB")
	cmd.Flags().DurationVar(&o.Window, "window", 3*time.Second, "how long each latency and throughput figure is measured")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write the results to this file as JSON")
	cmd.Flags().StringVar(&chart, "chart", "", "draw each figure against the store size into this SVG file")
	cmd.Flags().Var(&indexCache, "index-cache", "the index cache (`SIZE`, as serve --index-cache) of the store built and of the server (0 or unset: the default)")
	cmd.Flags().StringVar(&o.WorkDir, "work", "", "scratch directory, kept afterwards (default: a temporary one, removed after)")
	return cmd
}

// parseCounts reads counts such as 10000, 10k or 1M.
func parseCounts(ss []string) ([]int, error) {
	var out []int
	for _, s := range ss {
		s = strings.TrimSpace(s)
		mul := 1
		switch {
		case strings.HasSuffix(s, "k"):
			mul, s = 1000, strings.TrimSuffix(s, "k")
		case strings.HasSuffix(s, "M"):
			mul, s = 1000000, strings.TrimSuffix(s, "M")
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive count", s)
		}
		out = append(out, n*mul)
	}
	return out, nil
}

// serveChild runs `nixcas serve` on dir as a child process, with the
// background jobs off and an index cache of indexCache bytes (0: the
// default), and returns once it answers /nix-cache-info.
func serveChild(ctx context.Context, dir, signKey string, indexCache int64) (*bench.ScaleServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c := exec.Command(self, "serve", "--data", dir, "--listen-grpc", grpcAddr, "--listen-http", httpAddr,
		"--sign-key", signKey, "--compact-idle", "0", "--gc-interval", "0")
	if indexCache > 0 {
		c.Args = append(c.Args, "--index-cache", strconv.FormatInt(indexCache, 10))
	}
	// The access log (a line a request) goes to a file, not the terminal.
	logFile, err := os.OpenFile(filepath.Join(filepath.Dir(dir), "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	c.Stderr = logFile
	start := time.Now()
	if err := c.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	var (
		once    sync.Once
		waitErr error
	)
	stop := func() error {
		once.Do(func() {
			_ = c.Process.Signal(syscall.SIGTERM)
			select {
			case waitErr = <-exited:
			case <-time.After(time.Minute):
				_ = c.Process.Kill()
				waitErr = fmt.Errorf("nixcas serve did not stop within a minute: %v", <-exited)
			}
		})
		return waitErr
	}
	base := "http://" + httpAddr
	for {
		resp, err := http.Get(base + "/nix-cache-info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("nixcas serve exited: %v", err)
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return &bench.ScaleServer{HTTP: base, PID: c.Process.Pid, Start: time.Since(start), Stop: stop}, nil
}

// freeAddr returns a loopback address with a port free at the time.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
