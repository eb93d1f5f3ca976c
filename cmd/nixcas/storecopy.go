package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/s3objects"
)

// storeCopyOutput is what `store copy` prints.
type storeCopyOutput struct {
	pebblestore.CopyResult
	Stats   castore.Stats `json:"stats"`
	Seconds float64       `json:"seconds"`
}

func newStoreCopyCommand() *cobra.Command {
	var (
		from, to storeFlags
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "copy",
		Short: "Copy a whole store into a new one, between the embedded layout and PostgreSQL and S3",
		Args:  cobra.NoArgs,
		Long: `Copy every record and every frame of the store in --from-data (records in
--from-meta, frames in --from-blobs, when given) into a new store in
--to-data (records in --to-meta, frames in --to-blobs, when given): from the
embedded layout to PostgreSQL and S3 for several servers, or back.

The source is opened read-only; stop every server writing to it first
(an embedded source open elsewhere is refused; PostgreSQL cannot tell).
The target must be new: a target holding any record is
refused. Frames are copied first (each verified against its name; one the
target's object store already holds with the same size is skipped), then
the records in key order, then the counters, which completes the target.

Until then the target is marked as an incomplete copy, which every other
command refuses to open. A copy that was interrupted resumes when run
again with the same flags: frames already copied are skipped and the
records are written again.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkCopyFlags(&from, &to); err != nil {
				return err
			}
			ctx := cmd.Context()
			start := time.Now()
			src, err := from.openReadOnly()
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			defer src.Close()
			to.copyTarget = true
			dst, err := to.openWith(false, pebblestore.Options{Frames: pebblestore.FrameOptions{Off: true}})
			if err != nil {
				return fmt.Errorf("target: %w", err)
			}
			defer dst.Close()

			var (
				mu    sync.Mutex
				stage string
				bar   progress = quietProgress{}
				shown int64
			)
			opts := pebblestore.CopyOptions{
				Progress: func(s string, _, bytes, total int64) {
					mu.Lock()
					defer mu.Unlock()
					if s != stage {
						bar.Finish()
						bar, stage, shown = newProgress(total, "copying "+s), s, 0
					}
					bar.Add64(bytes - shown)
					shown = bytes
				},
			}
			res, err := pebblestore.CopyStore(ctx, dst, src, opts)
			mu.Lock()
			bar.Finish()
			mu.Unlock()
			if err != nil {
				return err
			}
			want, err := src.Stats(ctx)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			got, err := dst.Stats(ctx)
			if err != nil {
				return fmt.Errorf("target: %w", err)
			}
			if got != want {
				return fmt.Errorf("the target's counters %+v differ from the source's %+v", got, want)
			}
			if err := dst.Close(); err != nil {
				return fmt.Errorf("target: %w", err)
			}
			out := storeCopyOutput{CopyResult: res, Stats: got, Seconds: time.Since(start).Seconds()}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			rows := []struct {
				v    any
				name string
			}{
				{res.Records, "records copied"},
				{res.RecordBytes, "bytes of records"},
				{res.Frames, "frames copied"},
				{res.FrameBytes, "bytes of frames copied"},
				{res.FramesSkipped, "frames already in the target"},
				{got.Chunks, "chunks in the target (store stats)"},
				{got.StoredBytes, "stored bytes in the target (store stats)"},
			}
			if res.Resumed {
				fmt.Println("resumed an interrupted copy")
			}
			for _, r := range rows {
				fmt.Fprintf(tw, "%v\t  %s\t\n", r.v, r.name)
			}
			fmt.Fprintf(tw, "%.1f\t  %s\t\n", out.Seconds, "seconds")
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from.data, "from-data", "", "`DIR`: data directory of the source store (required)")
	fl.StringVar(&from.meta, "from-meta", "", "`URL` postgres://... of the database holding the source's records (default: the embedded database in --from-data)")
	fl.StringVar(&from.blobs.url, "from-blobs", "", "s3://... `URL` holding the source's frames (as --blobs; default: --from-data)")
	fl.StringVar(&to.data, "to-data", "", "`DIR`: data directory of the new store (required; created if missing)")
	fl.StringVar(&to.meta, "to-meta", "", "`URL` postgres://... of an empty database to hold the target's records (default: an embedded database in --to-data)")
	fl.StringVar(&to.blobs.url, "to-blobs", "", "s3://... `URL` to hold the target's frames (as --blobs; default: --to-data)")
	to.minFree = sizeValue(pebblestore.DefaultOptions.MinFreeBytes)
	fl.Var(&to.minFree, "min-free",
		"disk space to keep free in --to-data beyond room to flush the memtables: `SIZE` such as 2G; writes are refused below")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// checkCopyFlags refuses flags that name no store or one store twice.
func checkCopyFlags(from, to *storeFlags) error {
	if from.data == "" || to.data == "" {
		return errors.New("--from-data and --to-data are both required")
	}
	for _, f := range []struct{ name, meta string }{{"--from-meta", from.meta}, {"--to-meta", to.meta}} {
		if f.meta != "" && !pebblestore.IsPostgresURL(f.meta) {
			return fmt.Errorf("%s %q: want a postgres:// URL", f.name, f.meta)
		}
	}
	a, aerr := filepath.Abs(from.data)
	b, berr := filepath.Abs(to.data)
	if aerr == nil && berr == nil && a == b {
		return fmt.Errorf("--to-data %s is --from-data: copy into a directory of its own", to.data)
	}
	if from.meta != "" && from.meta == to.meta {
		return fmt.Errorf("--to-meta is --from-meta (%s): copy into a database of its own", redactURL(to.meta))
	}
	if from.blobs.url != "" && to.blobs.url != "" {
		fc, err := s3objects.ParseURL(from.blobs.url)
		if err != nil {
			return fmt.Errorf("--from-blobs: %w", err)
		}
		tc, err := s3objects.ParseURL(to.blobs.url)
		if err != nil {
			return fmt.Errorf("--to-blobs: %w", err)
		}
		if fc.Endpoint == tc.Endpoint && fc.Bucket == tc.Bucket && fc.Prefix == tc.Prefix {
			return fmt.Errorf("--to-blobs is --from-blobs (%s): copy into a bucket or prefix of its own", to.blobs.url)
		}
	}
	return nil
}
