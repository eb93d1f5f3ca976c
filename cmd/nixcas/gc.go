package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// gcCacheSize is the block cache of a store `nixcas gc` opens.
const gcCacheSize = 32 << 20

func newGCCommand() *cobra.Command {
	var (
		sf           storeFlags
		grace        time.Duration
		strayAge     time.Duration
		rewriteBelow float64
		level        string
		dryRun       bool
		asJSON       bool
		maxAge       ageValue
		maxSize      sizeValue
	)
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete what no store path and no kept file reaches, and rewrite mostly dead frames",
		Args:  cobra.NoArgs,
		Long: `Collect the garbage of the store in --data: directories, blob indexes
and chunks that no store path and no kept file (build log, debug info,
realisation) reaches, and that nothing wrote or deduplicated against in the
--grace period before the collection started (as the server records it).
Frames whose live share (live chunk bytes over decoded bytes) falls below
--rewrite-below have their live chunks rewritten into new frames and are
deleted; a frame with no live chunk is deleted; the others keep their dead
bytes (deadBytesLeft). With --meta (a database several servers share),
frame objects that no record names and that were last written more than
--stray-age ago are deleted too (a process stopped between putting a frame
and registering it left them; younger ones may be another server's frame
about to be registered).

Marking writes the reachable digests into a temporary database under the
data directory (gc-marks, removed at the end and by the next run after a
crash), read back beside the store's keys in digest order: memory stays
bounded whatever the number of chunks. Killed at any point, every live
path still renders and the next run finishes the job.

With --retention or --max-size, the paths retention selects (as "path
expire" does) are deleted first, and their data collected in the same run.

The store is opened exclusively: against a running server, use its
--gc-interval instead. --dry-run opens the store read-only and changes
nothing in it; with --retention or --max-size it lists the paths that
would be deleted, but its collection figures still count them as live.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			lvl, ok := zstdLevels[level]
			if !ok {
				return fmt.Errorf("--level %q: want one of fastest, default, better, best", level)
			}
			// A collection reads each key once, in order: a small block
			// cache does, and keeps the memory it needs bounded.
			s, err := sf.openWith(dryRun, pebblestore.Options{CacheSize: gcCacheSize})
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := cmd.Context()
			x := store.NewIndex(s, s)
			var report gcReport
			if maxAge != 0 || maxSize != 0 {
				r, err := x.Expire(ctx, store.Retention{MaxAge: time.Duration(maxAge), MaxSize: uint64(maxSize), DryRun: dryRun})
				if err != nil {
					return err
				}
				report.Retention = &r
				if !asJSON {
					if err := printExpire(r, dryRun, uint64(maxSize)); err != nil {
						return err
					}
				}
			}
			bars := newGCProgress()
			res, err := x.GC(ctx, s, pebblestore.GCOptions{
				Grace: grace, RewriteBelow: rewriteBelow, Level: lvl, DryRun: dryRun, Progress: bars.update, StrayAge: strayAge,
			})
			bars.finish()
			if err != nil {
				return err
			}
			if asJSON {
				report.GCResult = res
				return json.NewEncoder(os.Stdout).Encode(report)
			}
			verb, rewritten := "deleted", "rewritten"
			if dryRun {
				verb, rewritten = "to delete", "to rewrite"
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			rows := []struct {
				v    any
				name string
			}{
				{res.PathsLive, "store paths live"},
				{res.Files, "kept files live"},
				{res.NARFilesDeleted, "names of uploaded NAR files " + verb},
				{res.UseRecords, "uses within the grace period kept"},
				{res.DirectoriesDeleted, "directories " + verb},
				{res.BlobsDeleted, "blob indexes " + verb},
				{res.ChunksDeleted, "chunks " + verb},
				{res.ChunkBytesFreed, "bytes of them, uncompressed"},
				{res.FramesDeleted, "frames with no live chunk " + verb},
				{res.FramesRewritten, "frames below the threshold " + rewritten},
				{res.FramesWritten, "frames written"},
				{res.StoredBytesFreed, "stored bytes freed"},
				{res.StrayFramesDeleted, "stray frames " + verb + " (" + fmt.Sprint(res.StrayBytesFreed) + " bytes)"},
				{res.DeadBytesLeft, "dead bytes left in " + fmt.Sprint(res.FramesWithDeadBytes) + " frames"},
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%v\t  %s\t\n", r.v, r.name)
			}
			fmt.Fprintf(tw, "%.1f\t  %s\t\n", res.Seconds, "seconds")
			return tw.Flush()
		},
	}
	sf.register(cmd)
	cmd.Flags().DurationVar(&grace, "grace", pebblestore.DefaultGCOptions.Grace, "keep what was written or deduplicated against this long before the collection")
	cmd.Flags().DurationVar(&strayAge, "stray-age", pebblestore.DefaultGCOptions.StrayAge, "with --meta: delete frame objects no record names once last written this long ago")
	cmd.Flags().Float64Var(&rewriteBelow, "rewrite-below", pebblestore.DefaultGCOptions.RewriteBelow, "rewrite frames whose live share is below this (0: only delete frames with nothing live)")
	cmd.Flags().StringVar(&level, "level", "default", "zstd level of rewritten frames: fastest, default, better, best")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be freed, change nothing (opens read-only)")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print JSON: the collection's figures, and with retention "retention" (as "path expire --json" prints it)`)
	cmd.Flags().Var(&maxAge, "retention", "first delete the paths not used for this long: `DURATION` such as 90d, 2w, 36h (see path expire)")
	cmd.Flags().Var(&maxSize, "max-size", "first delete least recently used paths while the NAR sizes of those left add up to more: `SIZE` such as 500G (see path expire)")
	return cmd
}

// gcReport is what `nixcas gc --json` prints: the collection's figures,
// and what retention deleted before it.
type gcReport struct {
	store.GCResult
	Retention *store.ExpireResult `json:"retention,omitempty"`
}

// gcProgress draws one bar per step of a collection on stderr when it is
// a terminal.
type gcProgress struct {
	tty  bool
	step string
	bar  *progressbar.ProgressBar
	last int64
}

func newGCProgress() *gcProgress {
	return &gcProgress{tty: term.IsTerminal(int(os.Stderr.Fd()))}
}

func (p *gcProgress) update(step string, done, total int64) {
	if !p.tty {
		return
	}
	if step != p.step {
		p.finish()
		p.step, p.last = step, 0
		if total <= 0 {
			total = -1
		}
		if step == "rewriting" {
			p.bar = progressbar.DefaultBytes(total, step)
		} else {
			p.bar = progressbar.Default(total, step)
		}
	}
	p.bar.Add64(done - p.last)
	p.last = done
}

func (p *gcProgress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}
