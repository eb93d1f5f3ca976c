package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
	"github.com/nixcas/nixcas/store"
)

func newBenchGCCommand() *cobra.Command {
	var (
		o            bench.GCOptions
		toolchains   []string
		jsonOut      string
		rewriteBelow float64
	)
	cmd := &cobra.Command{
		Use:   "gc [TREE|NAR]... [--go-toolchains VERSION,...]",
		Short: "Time a garbage collection after half the store paths are deleted",
		Long: `Store the inputs as store paths (Go releases from --go-toolchains first,
the last input followed by --rebuild-sim simulated rebuilds of it), delete
every other path (the first, the third, ...), then run "nixcas gc --grace 0s"
as a child process and report its time, its peak RSS, and what it freed
beside the ideal: the chunks only the deleted paths used, found by walking
every path's tree before the collection.

--synthetic-chunks N instead writes a store of N chunk index entries (no
chunk bytes), half of them reachable from one store path through blob
indexes of 1000 chunks, to show that the collection's memory does not grow
with the number of chunks. The store stays in WORK/gc-store.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cleanup, err := scratchDir(&o.WorkDir, "nixcas-bench-gc-")
			if err != nil {
				return err
			}
			defer cleanup()
			if o.Synthetic == 0 {
				for _, v := range toolchains {
					if v = strings.TrimSpace(v); v == "" {
						continue
					}
					fmt.Fprintf(os.Stderr, "gc: preparing %s\n", v)
					tree, err := bench.GoToolchain(cmd.Context(), v, filepath.Join(o.WorkDir, "corpus"))
					if err != nil {
						return err
					}
					o.Inputs = append(o.Inputs, bench.DedupInput{Name: v, Path: tree})
				}
				for _, a := range args {
					o.Inputs = append(o.Inputs, bench.DedupInput{Name: filepath.Base(filepath.Clean(a)), Path: a})
				}
				if len(o.Inputs) == 0 {
					return errors.New("no inputs: give trees or NAR files, --go-toolchains, or --synthetic-chunks")
				}
			}
			o.Log = os.Stderr
			o.Collect = func(ctx context.Context, dir string) (store.GCResult, int64, error) {
				return collectInChild(ctx, dir, rewriteBelow)
			}
			res, err := bench.GC(cmd.Context(), o)
			if err != nil {
				return err
			}
			res.WriteMarkdown(os.Stdout)
			if jsonOut != "" {
				b, err := json.MarshalIndent(res, "", "  ")
				if err != nil {
					return err
				}
				return os.WriteFile(jsonOut, append(b, '\n'), 0o644)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&toolchains, "go-toolchains", nil, "Go releases to store, in order (e.g. go1.21.0,go1.22.0), fetched as modules")
	cmd.Flags().IntVar(&o.RebuildSim, "rebuild-sim", 0, "store the last input with this many simulated rebuilds of it (every /nix/store reference rehashed)")
	cmd.Flags().IntVar(&o.Synthetic, "synthetic-chunks", 0, "instead of inputs, a store of this many chunk index entries, half reachable")
	cmd.Flags().Float64Var(&rewriteBelow, "rewrite-below", 0.5, "passed to nixcas gc")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write the results to this file as JSON")
	cmd.Flags().StringVar(&o.WorkDir, "work", "", "scratch directory, kept afterwards (default: a temporary one, removed after)")
	return cmd
}

// collectInChild runs `nixcas gc` on dir as a child process and returns
// its JSON result and peak RSS in KiB.
func collectInChild(ctx context.Context, dir string, rewriteBelow float64) (store.GCResult, int64, error) {
	var res store.GCResult
	self, err := os.Executable()
	if err != nil {
		return res, 0, err
	}
	c := exec.CommandContext(ctx, self, "gc", "--json", "--data", dir, "--grace", "0s", "--rewrite-below", strconv.FormatFloat(rewriteBelow, 'g', -1, 64))
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return res, 0, fmt.Errorf("nixcas gc: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, 0, fmt.Errorf("nixcas gc output %q: %w", stdout.Bytes(), err)
	}
	var rss int64
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss // KiB on Linux
	}
	return res, rss, nil
}
