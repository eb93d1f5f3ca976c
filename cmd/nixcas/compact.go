package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// compactOutput is what `store compact` prints.
type compactOutput struct {
	pebblestore.CompactResult
	DryRun      bool    `json:"dryRun"`
	Seconds     float64 `json:"seconds"`
	StoredAfter uint64  `json:"storedBytesAfter"`
}

func newStoreCompactCommand() *cobra.Command {
	var (
		sf         storeFlags
		olderThan  time.Duration
		fanOut     int
		neighbours float64
		full       bool
		frameSize  int
		level      string
		dryRun     bool
		asJSON     bool
	)
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Rewrite older chunks into frames grouped by file across versions",
		Args:  cobra.NoArgs,
		Long: `Rewrite the new chunks of the store in --data into a run of cold frames:
the chunks of hot frames (those written at ingest, in ingest order) older
than --older-than, and every chunk still stored unpacked. The chunks of each
file are written next to the same file's other versions (files are grouped
by package name and path with digits left out, so that go-1.21.0/bin/go and
go-1.22.0/bin/go fall together) and compressed at a high zstd level, where
near-duplicates compress against each other.

Runs are tiered: the new chunks make a run of level 0; when --fan-out runs
of one level would exist, they are rewritten together (merged, the versions
of each file side by side again) into one run of the next level. A byte is
rewritten about log_fan-out(store / increment) times, not at every
compaction. Cold frames written before runs existed, and those of --full,
form one base run that only --full rewrites. --full rewrites every frame
into that one run. --dry-run lists the runs that would be merged and the
bytes to rewrite.

So that a new version of a file compresses against its earlier versions
before the runs merge, the cold frames of older runs that hold them (the
neighbours of the new chunks in that order) are rewritten with the new
chunks, up to --neighbours times the new bytes (0: never).

A compaction interrupted (killed, crashed) after it chose what to rewrite
is taken up again by the next one, whatever the age of the hot frames.

Each new frame is synced before chunks are switched to it, and the old
frames are deleted only after the switch is synced: killed at any point,
the store reads every chunk, and the next open deletes frames left behind.
The store is opened exclusively (stop a server using it first). Memory
grows with the number of chunks rewritten (about 150 bytes each) plus the
frame cache; listing them in order reads every store path's directories
and blob indexes and holds the digest of each distinct file and directory.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			lvl, ok := zstdLevels[level]
			if !ok {
				return fmt.Errorf("--level %q: want one of fastest, default, better, best", level)
			}
			s, err := sf.openWith(dryRun, pebblestore.Options{})
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := cmd.Context()
			start := time.Now()
			index := store.NewIndex(s, s)
			order := func(ctx context.Context, keep func(castore.Digest) bool) ([]castore.Digest, error) {
				o, err := index.CompactionOrder(ctx, keep)
				if err != nil {
					return nil, fmt.Errorf("listing the chunks of every store path: %w", err)
				}
				return o, nil
			}
			neighbourhood := func(ctx context.Context, isNew func(castore.Digest) bool) ([]castore.Digest, error) {
				o, err := index.CompactionNeighbourhood(ctx, isNew)
				if err != nil {
					return nil, fmt.Errorf("listing the chunks of the new chunks' files: %w", err)
				}
				return o, nil
			}
			var bar progress = quietProgress{}
			var shown int64
			opts := pebblestore.CompactOptions{
				Order: order, Neighbourhood: neighbourhood, OlderThan: olderThan, FanOut: fanOut, Full: full, Neighbours: neighboursOption(neighbours), FrameSize: frameSize, Level: lvl, DryRun: dryRun,
				Progress: func(done, total int64) {
					if shown == 0 {
						bar = newProgress(total, "compacting")
					}
					bar.Add64(done - shown)
					shown = done
				},
			}
			res, err := s.Compact(ctx, opts)
			bar.Finish()
			if err != nil {
				return err
			}
			st, err := s.Stats(ctx)
			if err != nil {
				return err
			}
			out := compactOutput{CompactResult: res, DryRun: dryRun, Seconds: time.Since(start).Seconds(), StoredAfter: st.StoredBytes}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			verb := "rewritten"
			if dryRun {
				verb = "to rewrite"
			}
			type row struct {
				v    any
				name string
			}
			rows := []row{
				{res.Chunks, "chunks " + verb},
				{res.DecodedBytes, "bytes of them, uncompressed"},
			}
			for _, from := range slices.Sorted(maps.Keys(res.RewrittenFrom)) {
				rows = append(rows, row{res.RewrittenFrom[from], "bytes of them from " + from})
			}
			rows = append(rows,
				row{res.FramesIn, "frames read"},
				row{res.InlineChunks, "chunks read unpacked"},
				row{res.StoredIn, "stored bytes read"})
			for _, r := range res.Merged {
				rows = append(rows, row{r.DecodedBytes, fmt.Sprintf("bytes in run %d of level %s (%d frames, %d stored bytes), merged",
					r.Run, levelText(r.Level), r.Frames, r.StoredBytes)})
			}
			if res.FramesPulled > 0 {
				rows = append(rows, row{res.PulledBytes, fmt.Sprintf("bytes in %d frames of older runs holding earlier versions, rewritten with them", res.FramesPulled)})
			}
			if res.NeighboursSkipped {
				rows = append(rows, row{"none", "frames of earlier versions rewritten with them: the store has too many chunks to list in memory"})
			}
			if res.Into != nil {
				rows = append(rows, row{levelText(res.Into.Level), fmt.Sprintf("level of the run written (run %d)", res.Into.Run)})
			}
			if !dryRun {
				rows = append(rows,
					row{res.FramesOut, "frames written"},
					row{res.StoredOut, "stored bytes written"},
					row{res.FramesDeleted, "frames deleted"},
					row{st.StoredBytes, "stored bytes now (store stats)"})
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%v\t  %s\t\n", r.v, r.name)
			}
			fmt.Fprintf(tw, "%.1f\t  %s\t\n", out.Seconds, "seconds")
			return tw.Flush()
		},
	}
	sf.register(cmd)
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "leave hot frames younger than this as they are")
	cmd.Flags().IntVar(&fanOut, "fan-out", pebblestore.DefaultCompactOptions.FanOut, "merge this many runs of one level into one of the next")
	cmd.Flags().Float64Var(&neighbours, "neighbours", pebblestore.DefaultCompactOptions.Neighbours,
		"also rewrite the cold frames holding earlier versions of the new chunks' files, up to this many times the new bytes (0: never)")
	cmd.Flags().BoolVar(&full, "full", false, "rewrite every frame into one run, not only the new chunks and the runs they merge with")
	cmd.Flags().IntVar(&frameSize, "frame-size", pebblestore.DefaultCompactOptions.FrameSize, "uncompressed bytes per cold frame")
	cmd.Flags().StringVar(&level, "level", "best", "zstd level of cold frames: "+strings.Join(zstdLevelNames, ", "))
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be rewritten, change nothing (opens read-only)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// neighboursOption turns --neighbours into CompactOptions.Neighbours,
// where 0 means the default and a negative value off.
func neighboursOption(f float64) float64 {
	if f <= 0 {
		return -1
	}
	return f
}

// levelText names a run's level: its number, or "base".
func levelText(l int) string {
	if l == pebblestore.LevelBase {
		return "base"
	}
	return strconv.Itoa(l)
}

// zstdLevels are the zstd levels a flag names.
var (
	zstdLevels = map[string]zstd.EncoderLevel{
		"fastest": zstd.SpeedFastest,
		"default": zstd.SpeedDefault,
		"better":  zstd.SpeedBetterCompression,
		"best":    zstd.SpeedBestCompression,
	}
	zstdLevelNames = []string{"fastest", "default", "better", "best"}
)

// zstdLevelValue is a flag naming a zstd level (one of zstdLevelNames);
// 0 when unset.
type zstdLevelValue zstd.EncoderLevel

func (v *zstdLevelValue) String() string {
	if *v == 0 {
		return ""
	}
	return zstd.EncoderLevel(*v).String()
}

func (v *zstdLevelValue) Set(s string) error {
	l, ok := zstdLevels[s]
	if !ok {
		return fmt.Errorf("zstd level %q: want one of %s", s, strings.Join(zstdLevelNames, ", "))
	}
	*v = zstdLevelValue(l)
	return nil
}

func (v *zstdLevelValue) Type() string { return "level" }
