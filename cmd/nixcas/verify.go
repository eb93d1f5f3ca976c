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

	"github.com/nixcas/nixcas/store"
)

// verifyOutput is what `verify --json` prints.
type verifyOutput struct {
	store.VerifyReport
	OK      bool    `json:"ok"`
	Repair  bool    `json:"repair"`
	Seconds float64 `json:"seconds"`
}

func newVerifyCommand() *cobra.Command {
	var (
		sf       storeFlags
		readData bool
		repair   bool
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that every store path's data is there and sound",
		Long: `Check the store in --data: every store path's tree is complete (each
directory, blob index and chunk present, directory sizes right). With
--read-data, also read every stored chunk through its frame and re-hash it
(a damaged frame is found and named), and render every path's NAR,
checking its SHA-256 and size against the narinfo.

Prints each problem (path, what, which digest or frame) and exits non-zero
when there is any. --repair deletes the broken paths, so that no narinfo
is served without all its data, and the corrupt chunks, so that uploading
a path again stores them anew; it says which. Their other data is left to
a garbage collection. Without --repair the store is opened read-only; with
it, exclusively (stop a server using it first).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			var rep store.VerifyReport
			err := withIndex(&sf, !repair, func(x *store.Index) error {
				bars := verifyProgress{pathBytes: readData}
				var err error
				rep, err = x.Verify(cmd.Context(), store.VerifyOptions{ReadData: readData, Repair: repair, Progress: bars.update})
				bars.finish()
				return err
			})
			if err != nil {
				return err
			}
			out := verifyOutput{VerifyReport: rep, OK: rep.OK(), Repair: repair, Seconds: time.Since(start).Seconds()}
			if asJSON {
				if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
					return err
				}
			} else if err := printVerify(out); err != nil {
				return err
			}
			if !rep.OK() {
				return fmt.Errorf("verify: %d problems, %d store paths broken, %d removed", len(rep.Problems), len(rep.Broken), len(rep.Removed))
			}
			return nil
		},
	}
	sf.register(cmd)
	sf.noDecodedCache = true
	cmd.Flags().BoolVar(&readData, "read-data", false, "read and re-hash every chunk and render every NAR (slow: reads the whole store)")
	cmd.Flags().BoolVar(&repair, "repair", false, "delete the broken store paths and the corrupt chunks")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

// printVerify prints the problems, one per line, then the totals.
func printVerify(out verifyOutput) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, p := range out.Problems {
		what := p.Path
		if what == "" {
			what = "chunk " + p.Digest
		} else {
			what = store.StoreDir + "/" + what
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", what, p.What, p.Detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range out.Removed {
		fmt.Printf("removed: %s/%s\n", store.StoreDir, p)
	}
	if out.RemovedChunks > 0 {
		fmt.Printf("removed %d corrupt chunks\n", out.RemovedChunks)
	}
	fmt.Printf("%d store paths (%d NAR bytes)", out.Paths, out.NARBytes)
	if out.ReadData {
		fmt.Printf(", %d chunks (%d bytes) read", out.Chunks, out.ChunkBytes)
	}
	fmt.Printf(": %d problems, %d paths broken, %.1f s\n", len(out.Problems), len(out.Broken), out.Seconds)
	return nil
}

// verifyProgress draws one progress bar per phase on a terminal.
type verifyProgress struct {
	pathBytes bool // the paths phase counts NAR bytes, not paths
	phase     string
	bar       *progressbar.ProgressBar
}

func (v *verifyProgress) update(phase string, done, total int64) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return
	}
	if phase != v.phase {
		v.finish()
		v.phase = phase
		switch {
		case phase == "chunks":
			v.bar = progressbar.DefaultBytes(total, "reading the other chunks")
		case v.pathBytes:
			v.bar = progressbar.DefaultBytes(total, "rendering paths")
		default:
			v.bar = progressbar.Default(total, "checking paths")
		}
	}
	v.bar.Set64(done)
}

func (v *verifyProgress) finish() {
	if v.bar != nil {
		v.bar.Finish()
		v.bar = nil
	}
}
