package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/bench"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

func newBenchDedupCommand() *cobra.Command {
	var (
		o          bench.DedupOptions
		toolchains []string
		chart      string
		jsonOut    string
		hotLevel   string
		coldLevel  string
	)
	cmd := &cobra.Command{
		Use:   "dedup [TREE|NAR]... [--go-toolchains VERSION,...]",
		Short: "What each way of storing the same NARs stores, as a Markdown table",
		Long: `Store the inputs in order, as successive versions of a package, with every
strategy: raw NARs, xz and zstd -19 per NAR, whole-file dedup, NAR-level
FastCDC (lz4 and zstd chunks), nixcas chunks stored one by one (lz4 at 16,
64 and 256 KiB; zstd at 64 KiB), the default store (64 KiB chunks packed
into zstd frames in ingest order) in size and on disk, the same data
compacted after each input as "nixcas store compact" does, and one
zstd --long stream over everything as the limit. Prints the stored bytes,
their ratio to the raw NARs and to xz, and the bytes each input added as
Markdown; progress goes to standard error.

Inputs are trees (made into NARs by nix-store --dump) or NAR files, in the
order given; Go releases from --go-toolchains come first. The framed stores
record each NAR as a store path named after its input, so
"nixcas store compact --data WORK/nixcas-frames" compacts that store (into
one run, as nixcas-compact ends when its last compaction merges every run:
after FanOut^k inputs).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, l := range []struct {
				flag, name string
				level      *zstd.EncoderLevel
			}{{"--frame-level", hotLevel, &o.Frames.Level}, {"--cold-level", coldLevel, &o.Compact.Level}} {
				lvl, ok := zstdLevels[l.name]
				if !ok {
					return fmt.Errorf("%s %q: want one of %s", l.flag, l.name, strings.Join(zstdLevelNames, ", "))
				}
				*l.level = lvl
			}
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
			o.Compact.Neighbours = neighboursOption(o.Compact.Neighbours)
			res, err := bench.Dedup(cmd.Context(), o)
			if err != nil {
				return err
			}
			return writeBenchResult(res, jsonOut, chart)
		},
	}
	cmd.Flags().StringSliceVar(&toolchains, "go-toolchains", nil, "Go releases to store, in order (e.g. go1.22.0,go1.22.1), fetched as modules")
	cmd.Flags().IntVar(&o.RebuildSim, "rebuild-sim", 0, "after each input, store this many simulated rebuilds of it (every /nix/store reference rehashed)")
	cmd.Flags().StringVar(&chart, "chart", "", "draw the results into this .svg file")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write the results to this file as JSON")
	cmd.Flags().StringVar(&o.WorkDir, "work", "", "scratch directory, kept afterwards (default: a temporary one, removed after); the stores stay in WORK/nixcas-frames (default options), WORK/nixcas-compact, WORK/nixcas-16k and WORK/nixcas-256k")
	cmd.Flags().IntVar(&o.Jobs, "jobs", 0, "compressor processes (xz, zstd -19) running at once (default GOMAXPROCS)")
	cmd.Flags().IntVar(&o.Frames.Size, "frame-size", pebblestore.DefaultFrameOptions.Size, "uncompressed bytes per hot frame in the framed stores")
	cmd.Flags().BoolVar(&o.Frames.NoCallFilter, "no-call-filter", false, "write the framed stores' frames without the x86 call filter (for comparisons)")
	cmd.Flags().StringVar(&hotLevel, "frame-level", "default", "zstd level of hot frames: "+strings.Join(zstdLevelNames, ", "))
	cmd.Flags().Float64Var(&o.Compact.Neighbours, "neighbours", pebblestore.DefaultCompactOptions.Neighbours, "in nixcas-compact, also rewrite the cold frames holding earlier versions of the new chunks' files, up to this many times the new bytes; 0: never (see store compact --neighbours)")
	cmd.Flags().IntVar(&o.Compact.FanOut, "fan-out", pebblestore.DefaultCompactOptions.FanOut, "runs of cold frames merged at a time in nixcas-compact (see store compact --fan-out)")
	cmd.Flags().IntVar(&o.Compact.FrameSize, "cold-frame-size", pebblestore.DefaultCompactOptions.FrameSize, "uncompressed bytes per cold frame in nixcas-compact")
	cmd.Flags().StringVar(&coldLevel, "cold-level", "best", "zstd level of cold frames: "+strings.Join(zstdLevelNames, ", "))
	cmd.Flags().BoolVar(&o.NoCompressors, "no-compressors", false, "leave out xz, zstd-19 and limit-zstd-long (for tuning the nixcas strategies, whose figures do not depend on them)")
	return cmd
}
