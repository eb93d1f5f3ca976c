package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

func newImportCommand() *cobra.Command {
	var (
		sf       storeFlags
		jobs     int
		signKeys []string
	)
	cmd := &cobra.Command{
		Use:   "import SOURCE [STORE-PATH...]",
		Short: "Copy an existing Nix binary cache into the store",
		Long: `Copy the paths of a Nix binary cache into the store. SOURCE is a directory
(or file:// URL) that "nix copy --to file://..." wrote, or an http:// or
https:// binary cache. With STORE-PATHs (absolute, base names or hashes),
those paths and their closures are imported; without, every path the cache
lists (a directory's narinfos, or the links to narinfos in an HTTP cache's
index page).

Every compression Nix writes is read; each NAR is checked against its
narinfo's NarHash and NarSize; the narinfo's signatures are kept. Paths are
committed one by one, references first, and paths already in the store are
skipped, so an interrupted import resumes where it stopped when run again.
With --sign-key, each path imported also gets a signature of that key,
stored with it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := loadSignKeys(signKeys)
			if err != nil {
				return err
			}
			signer, err := store.NewSigner(keys...)
			if err != nil {
				return err
			}
			src, err := httpcache.OpenSource(args[0])
			if err != nil {
				return err
			}
			s, err := sf.open()
			if err != nil {
				return err
			}
			defer s.Close()
			rep := newImportReporter(os.Stderr)
			st, err := httpcache.Import(cmd.Context(), httpcache.ImportOptions{
				CAS:    s,
				Index:  store.NewIndex(s, s, store.WithSigner(signer)),
				Source: src,
				Paths:  args[1:],
				Jobs:   jobs,
				Events: rep.event,
				NAR:    rep,
			})
			rep.finish()
			fmt.Fprintf(os.Stderr, "imported %d paths (%s of NAR), skipped %d already present, %d failed\n",
				st.Imported, importMiB(st.NARBytes), st.Skipped, st.Failed)
			if err != nil {
				return err
			}
			if err := s.Close(); err != nil {
				return err
			}
			if st.Failed > 0 {
				return fmt.Errorf("%d paths failed to import", st.Failed)
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 4, "paths imported at once")
	cmd.Flags().StringArrayVar(&signKeys, "sign-key", nil, "file holding a Nix secret key (name:base64) to sign the imported paths with; repeatable")
	return cmd
}

// importReporter shows an import's progress on stderr: a progress bar over
// the NAR bytes when stderr is a terminal, else one line per path. Failures
// are always printed.
type importReporter struct {
	out io.Writer
	tty bool
	bar progress
}

func newImportReporter(out *os.File) *importReporter {
	return &importReporter{out: out, tty: term.IsTerminal(int(out.Fd())), bar: quietProgress{}}
}

// Write counts ingested NAR bytes (it is called from several goroutines;
// the progress bar locks).
func (r *importReporter) Write(p []byte) (int, error) { return r.bar.Write(p) }

func (r *importReporter) event(e httpcache.ImportEvent) {
	switch e.Kind {
	case httpcache.ImportPlanned:
		if r.tty {
			r.bar = newProgress(int64(e.NARSize), fmt.Sprintf("importing %d paths", e.Paths))
		} else {
			fmt.Fprintf(r.out, "importing %d paths (%s of NAR)\n", e.Paths, importMiB(e.NARSize))
		}
	case httpcache.ImportDone:
		if !r.tty {
			fmt.Fprintf(r.out, "imported %s (%s)\n", e.Path, importMiB(e.NARSize))
		}
	case httpcache.ImportSkipped:
		if !r.tty {
			fmt.Fprintf(r.out, "skipped %s (already present)\n", e.Path)
		}
	case httpcache.ImportFailed:
		if r.tty {
			fmt.Fprintln(r.out)
		}
		fmt.Fprintf(r.out, "failed %s: %v\n", e.Path, e.Err)
	}
}

func (r *importReporter) finish() { r.bar.Finish() }

func importMiB(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
