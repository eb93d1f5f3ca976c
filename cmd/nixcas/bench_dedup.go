package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
)

func newBenchDedupCommand() *cobra.Command {
	var (
		o          bench.DedupOptions
		toolchains []string
		chart      string
		jsonOut    string
	)
	cmd := &cobra.Command{
		Use:   "dedup [TREE|NAR]... [--go-toolchains VERSION,...]",
		Short: "What each way of storing the same NARs stores, as a Markdown table",
		Long: `Store the inputs in order, as successive versions of a package, with every
strategy: raw NARs, xz and zstd -19 per NAR, whole-file dedup, NAR-level
FastCDC (lz4 and zstd chunks), nixcas at 16, 64 and 256 KiB chunks, a real
Pebble store on disk, and one zstd --long stream over everything as the
limit. Prints the stored bytes, their ratio to the raw NARs and the bytes
each input added as Markdown; progress goes to standard error.

Inputs are trees (made into NARs by nix-store --dump) or NAR files, in the
order given; Go releases from --go-toolchains come first.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cleanup, err := scratchDir(&o.WorkDir, "nixcas-dedup-")
			if err != nil {
				return err
			}
			defer cleanup()
			for _, v := range toolchains {
				v = strings.TrimSpace(v)
				if v == "" {
					continue
				}
				fmt.Fprintf(os.Stderr, "dedup: preparing %s\n", v)
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
				return errors.New("no inputs: give trees or NAR files, or --go-toolchains")
			}
			o.Log = os.Stderr
			res, err := bench.Dedup(cmd.Context(), o)
			if err != nil {
				return err
			}
			res.WriteMarkdown(os.Stdout)
			if jsonOut != "" {
				if err := res.WriteJSON(jsonOut); err != nil {
					return err
				}
			}
			if chart != "" {
				if err := res.WriteChart(chart); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&toolchains, "go-toolchains", nil, "Go releases to store, in order (e.g. go1.22.0,go1.22.1), fetched as modules")
	cmd.Flags().IntVar(&o.RebuildSim, "rebuild-sim", 0, "after each input, store this many simulated rebuilds of it (every /nix/store reference rehashed)")
	cmd.Flags().StringVar(&chart, "chart", "", "draw the results into this .svg file")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write the results to this file as JSON")
	cmd.Flags().StringVar(&o.WorkDir, "work", "", "scratch directory, kept afterwards (default: a temporary one, removed after); the stores stay in WORK/nixcas-disk (64 KiB chunks), WORK/nixcas-16k and WORK/nixcas-256k")
	cmd.Flags().IntVar(&o.Jobs, "jobs", 0, "compressor processes (xz, zstd -19) running at once (default GOMAXPROCS)")
	return cmd
}
