package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixcas/nixcas/server/httpcache"
	"github.com/nixcas/nixcas/store"
)

func newImportCommand() *cobra.Command {
	var (
		sf        storeFlags
		jobs      int
		signKeys  []string
		asJSON    bool
		tokenFile string
		netrcFile string
	)
	cmd := &cobra.Command{
		Use:   "import [--data DIR] [--jobs N] [--sign-key FILE]... [--token-file FILE | --netrc-file FILE] [--json] SOURCE [STORE-PATH...]",
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

A protected http(s) source gets --token-file's token as "Authorization:
Bearer", or the login and password of --netrc-file's entry for its host
(as Nix's netrc-file) as basic authentication; credentials go to that host
only. With --sign-key, each path imported also gets a signature of that
key, stored with it. Progress goes to stderr; with --json, a summary is
printed on stdout at the end, also when paths failed:
{"imported":N,"skipped":N,"failed":N,"narBytes":N} (narBytes: the NAR bytes
of the paths imported).`,
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
			hc, err := sourceClient(args[0], tokenFile, netrcFile)
			if err != nil {
				return err
			}
			src, err := httpcache.OpenSourceWith(args[0], hc)
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
			if asJSON {
				out := importSummary{Imported: st.Imported, Skipped: st.Skipped, Failed: st.Failed, NARBytes: st.NARBytes}
				if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
					return err
				}
			}
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
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary on stdout")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "file holding a token sent to an http(s) SOURCE as Authorization: Bearer")
	cmd.Flags().StringVar(&netrcFile, "netrc-file", "", "netrc file whose entry for SOURCE's host gives the basic authentication to send")
	cmd.MarkFlagsMutuallyExclusive("token-file", "netrc-file")
	return cmd
}

// importSummary is what import --json prints.
type importSummary struct {
	Imported int    `json:"imported"`
	Skipped  int    `json:"skipped"`
	Failed   int    `json:"failed"`
	NARBytes uint64 `json:"narBytes"`
}

// sourceClient returns the HTTP client for the import source loc: nil
// (the default client) without credentials.
func sourceClient(loc, tokenFile, netrcFile string) (*http.Client, error) {
	if tokenFile == "" && netrcFile == "" {
		return nil, nil
	}
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--token-file and --netrc-file are for http:// and https:// sources, not %q", loc)
	}
	var auth string
	if tokenFile != "" {
		token, err := readToken(tokenFile)
		if err != nil {
			return nil, err
		}
		auth = "Bearer " + token
	} else {
		login, password, err := netrcLookup(netrcFile, u.Hostname())
		if err != nil {
			return nil, err
		}
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(login+":"+password))
	}
	return &http.Client{Transport: authTransport{host: u.Host, auth: auth, next: http.DefaultTransport}}, nil
}

// authTransport adds an Authorization header to the requests to one host
// (not to those a redirect sends elsewhere).
type authTransport struct {
	host, auth string
	next       http.RoundTripper
}

func (t authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || req.Header.Get("Authorization") != "" {
		return t.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", t.auth)
	return t.next.RoundTrip(req)
}

// netrcLookup returns the login and password of host's entry in the netrc
// file, else of its "default" entry. It reads the tokens machine, default,
// login and password (account and macdef are not supported).
func netrcLookup(file, host string) (login, password string, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("--netrc-file: %w", err)
	}
	fields := strings.Fields(string(b))
	type entry struct{ login, password string }
	var (
		found, fallback *entry
		cur             *entry
	)
	for i := 0; i < len(fields); i++ {
		value := func() (string, error) {
			if i+1 >= len(fields) {
				return "", fmt.Errorf("--netrc-file %s: %q has no value", file, fields[i])
			}
			i++
			return fields[i], nil
		}
		switch fields[i] {
		case "machine":
			m, err := value()
			if err != nil {
				return "", "", err
			}
			cur = &entry{}
			if m == host && found == nil {
				found = cur
			}
		case "default":
			cur = &entry{}
			if fallback == nil {
				fallback = cur
			}
		case "login", "password":
			v, err := value()
			if err != nil {
				return "", "", err
			}
			if cur == nil {
				return "", "", fmt.Errorf("--netrc-file %s: %s before any machine", file, fields[i-1])
			}
			if fields[i-1] == "login" {
				cur.login = v
			} else {
				cur.password = v
			}
		case "account", "macdef":
			return "", "", fmt.Errorf("--netrc-file %s: %q is not supported", file, fields[i])
		default:
			return "", "", fmt.Errorf("--netrc-file %s: unexpected %q", file, fields[i])
		}
	}
	if found == nil {
		found = fallback
	}
	if found == nil || found.password == "" {
		return "", "", fmt.Errorf("--netrc-file %s has no password for %s", file, host)
	}
	return found.login, found.password, nil
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
