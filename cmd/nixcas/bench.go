package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
)

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure nixcas beside its baselines"}
	cmd.AddCommand(newBenchSpeedCommand(), newBenchDedupCommand(), newBenchTransferCommand(), newBenchProxyCommand(), newBenchSoakCommand(), newBenchGCCommand(), newBenchScaleCommand())
	return cmd
}

func newBenchSpeedCommand() *cobra.Command {
	var (
		o       bench.SpeedOptions
		version string
		profile string
		jsonOut string
	)
	cmd := &cobra.Command{
		Use:   "speed (--tree DIR | --go-toolchain VERSION)",
		Short: "Ingest and render throughput beside nix-store --dump, as a Markdown table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (o.Tree == "") == (version == "") {
				return errors.New("give exactly one of --tree and --go-toolchain")
			}
			cleanup, err := scratchDir(&o.WorkDir, "nixcas-bench-")
			if err != nil {
				return err
			}
			defer cleanup()
			o.Log = os.Stderr
			if version != "" {
				tree, err := bench.GoToolchain(cmd.Context(), version, filepath.Join(o.WorkDir, "corpus"))
				if err != nil {
					return err
				}
				o.Tree = tree
			}
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
			res, err := bench.Speed(cmd.Context(), o)
			if err != nil {
				return err
			}
			res.WriteMarkdown(os.Stdout)
			if jsonOut != "" {
				return res.WriteJSON(jsonOut)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write the results (with the load average of each step) to this file as JSON")
	cmd.Flags().StringVar(&o.Tree, "tree", "", "directory to measure")
	cmd.Flags().StringVar(&version, "go-toolchain", "", "measure this Go release (e.g. go1.22.0), fetched as a module")
	cmd.Flags().StringVar(&o.WorkDir, "work", "", "scratch directory (default: a temporary one, removed after)")
	cmd.Flags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the run to this file")
	cmd.Flags().IntVar(&o.Writer.Chunker.AvgSize, "chunk-avg", 0, "average chunk size in bytes (default: the store's default), min and max a quarter and four times it")
	cmd.Flags().IntVar(&o.Runs, "runs", 3, "repetitions of each step; the best is reported")
	return cmd
}

// benchResult is what the benchmarks with a table, JSON and a chart
// return.
type benchResult interface {
	WriteMarkdown(io.Writer)
	WriteJSON(file string) error
	WriteChart(file string) error
}

// writeBenchResult prints res's table on stdout, then writes its JSON and
// its chart to the files named, when named.
func writeBenchResult(res benchResult, jsonOut, chart string) error {
	res.WriteMarkdown(os.Stdout)
	if jsonOut != "" {
		if err := res.WriteJSON(jsonOut); err != nil {
			return err
		}
	}
	if chart != "" {
		return res.WriteChart(chart)
	}
	return nil
}

// scratchDir points *dir at a new temporary directory when it is empty,
// returning the function that removes it again (a no-op for a directory
// the user gave).
func scratchDir(dir *string, prefix string) (cleanup func(), err error) {
	if *dir != "" {
		return func() {}, nil
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	*dir = d
	return func() { os.RemoveAll(d) }, nil
}
