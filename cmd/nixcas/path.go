package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

func newPathCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "path",
		Short: "Delete, pin and expire store paths of a local store",
		Long: `Delete, pin and expire the store paths of the store in --data. Each
command opens the store exclusively: stop a server using it first (a
running server deletes with an authenticated DELETE /<hash>.narinfo, and
expires with serve --retention and --max-size).

Deleting a path removes its narinfo at once; its data stays stored,
unreferenced, until a garbage collection frees it.`,
	}
	cmd.AddCommand(newPathDeleteCommand(), newPathPinCommand(true), newPathPinCommand(false),
		newPathPinsCommand(), newPathExpireCommand())
	return cmd
}

// pathResult is what `path delete`, `pin` and `unpin` print as JSON.
type pathResult struct {
	// Done lists the store paths deleted (pinned, unpinned).
	Done []string `json:"done"`
	// Absent lists the arguments that named no stored path (for unpin:
	// no pinned path).
	Absent []string `json:"absent"`
	// Unchanged lists the paths pinned already (pin only).
	Unchanged []string `json:"unchanged,omitempty"`
}

func newPathDeleteCommand() *cobra.Command {
	var (
		sf     storeFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "delete STOREPATH...",
		Short: "Delete store paths (their data becomes garbage for a collection)",
		Long: `Delete the store paths named, each given as /nix/store/<hash>-<name>, as
<hash>-<name>, or as the 32-character <hash>. Their narinfos are gone at
once (with their pins and access times); their data stays until a garbage
collection. Every argument is checked before anything is deleted. Prints
what was deleted and what was not there.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := parsePathArgs(args)
			if err != nil {
				return err
			}
			return withIndex(&sf, false, func(x *store.Index) error {
				ctx := cmd.Context()
				res := pathResult{Done: []string{}, Absent: []string{}}
				for i, d := range ds {
					p, err := x.Get(ctx, d)
					if errors.Is(err, store.ErrNotFound) {
						res.Absent = append(res.Absent, args[i])
						continue
					}
					if err != nil {
						return err
					}
					ok, err := x.Delete(ctx, d)
					if err != nil {
						return fmt.Errorf("deleting %s: %w", p.AbsolutePath(), err)
					}
					if ok {
						res.Done = append(res.Done, p.AbsolutePath())
					} else {
						res.Absent = append(res.Absent, args[i])
					}
				}
				return printPathResult(res, asJSON, "deleted", "not there")
			})
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, `print JSON: {"done":[deleted paths],"absent":[arguments not there]}`)
	return cmd
}

func newPathPinCommand(pin bool) *cobra.Command {
	var (
		sf     storeFlags
		asJSON bool
	)
	use, short, long := "pin", "Pin store paths: retention never deletes them",
		`Pin the store paths named (as for "path delete"): retention (serve
--retention, --max-size; path expire) never deletes a pinned path. A path
must be stored to be pinned; deleting it removes its pin.`
	if !pin {
		use, short, long = "unpin", "Unpin store paths", `Remove the pins of the store paths named (as for "path delete").`
	}
	cmd := &cobra.Command{
		Use:   use + " STOREPATH...",
		Short: short,
		Long:  long,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := parsePathArgs(args)
			if err != nil {
				return err
			}
			return withIndex(&sf, false, func(x *store.Index) error {
				ctx := cmd.Context()
				res := pathResult{Done: []string{}, Absent: []string{}}
				for i, d := range ds {
					var changed bool
					var name string
					if pin {
						p, err := x.Get(ctx, d)
						if errors.Is(err, store.ErrNotFound) {
							res.Absent = append(res.Absent, args[i])
							continue
						}
						if err != nil {
							return err
						}
						name = p.AbsolutePath()
						if changed, err = x.Pin(ctx, d); err != nil {
							return fmt.Errorf("pinning %s: %w", name, err)
						}
						if !changed {
							res.Unchanged = append(res.Unchanged, name)
							continue
						}
					} else {
						name = args[i]
						if p, err := x.Get(ctx, d); err == nil {
							name = p.AbsolutePath()
						}
						if changed, err = x.Unpin(ctx, d); err != nil {
							return fmt.Errorf("unpinning %s: %w", name, err)
						}
						if !changed {
							res.Absent = append(res.Absent, args[i])
							continue
						}
					}
					res.Done = append(res.Done, name)
				}
				if pin {
					if err := printPathResult(res, asJSON, "pinned", "not there"); err != nil || asJSON {
						return err
					}
					for _, p := range res.Unchanged {
						fmt.Printf("pinned already: %s\n", p)
					}
					return nil
				}
				return printPathResult(res, asJSON, "unpinned", "not pinned")
			})
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPathPinsCommand() *cobra.Command {
	var (
		sf     storeFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "pins",
		Short: "List the pinned store paths",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withIndex(&sf, true, func(x *store.Index) error {
				pins := []store.Pin{}
				if err := x.Pins(cmd.Context(), func(p store.Pin) error {
					p.Path = store.StoreDir + "/" + p.Path
					pins = append(pins, p)
					return nil
				}); err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(os.Stdout).Encode(pins)
				}
				for _, p := range pins {
					fmt.Printf("%s\tpinned %s\n", p.Path, p.Since.Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	sf.registerReadOnly(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, `print JSON: [{"path":…,"since":…}]`)
	return cmd
}

func newPathExpireCommand() *cobra.Command {
	var (
		sf      storeFlags
		maxAge  ageValue
		maxSize sizeValue
		dryRun  bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Delete the store paths not uploaded or downloaded lately",
		Long: `Delete, once, the store paths neither uploaded nor downloaded within
--retention, then, while the NAR sizes of the paths left add up to more
than --max-size, the least recently used ones; pinned paths never ("path
pin"). serve --retention and --max-size do the same every hour.

A path is used when it is uploaded, or when its narinfo or NAR is served
over HTTP or its PathInfo over gRPC (recorded to the minute, written every
30 s and refreshed at most hourly). A path with no such record yet (stored
by a version that kept none) counts as used when retention first sees it.

--max-size counts NAR sizes, what the paths are to Nix: stored bytes are
deduplicated and compressed, so usually far less, and they drop only
after a garbage collection frees the deleted paths' data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxAge == 0 && maxSize == 0 {
				return errors.New("nothing to expire by: give --retention, --max-size or both")
			}
			return withIndex(&sf, dryRun, func(x *store.Index) error {
				res, err := x.Expire(cmd.Context(), store.Retention{MaxAge: time.Duration(maxAge), MaxSize: uint64(maxSize), DryRun: dryRun})
				if err != nil {
					return err
				}
				if asJSON {
					return json.NewEncoder(os.Stdout).Encode(res)
				}
				return printExpire(res, dryRun, uint64(maxSize))
			})
		},
	}
	sf.register(cmd)
	cmd.Flags().Var(&maxAge, "retention", "delete paths not used for this long: `DURATION` such as 90d, 2w, 36h (0: no age limit)")
	cmd.Flags().Var(&maxSize, "max-size", "delete least recently used paths while the NAR sizes of those left add up to more: `SIZE` such as 500G (1024-based K, M, G, T or KiB…; 1000-based KB, MB, GB, TB; 0: no limit)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be deleted, change nothing (opens read-only)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// withIndex opens the store (read-only when readOnly), and calls fn with
// its index, closing the store after.
func withIndex(sf *storeFlags, readOnly bool, fn func(x *store.Index) error) error {
	s, err := sf.openWith(readOnly, pebblestore.Options{})
	if err != nil {
		return err
	}
	err = fn(store.NewIndex(s, s))
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// printPathResult prints res as JSON or as a line per path.
func printPathResult(res pathResult, asJSON bool, done, absent string) error {
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	for _, p := range res.Done {
		fmt.Printf("%s: %s\n", done, p)
	}
	for _, p := range res.Absent {
		fmt.Printf("%s: %s\n", absent, p)
	}
	return nil
}

// parsePathArgs parses every argument as a store path (see parsePathArg),
// failing on the first that is not one.
func parsePathArgs(args []string) ([]store.PathDigest, error) {
	ds := make([]store.PathDigest, len(args))
	for i, a := range args {
		d, err := parsePathArg(a)
		if err != nil {
			return nil, err
		}
		ds[i] = d
	}
	return ds, nil
}

// parsePathArg parses a store path given as /nix/store/<hash>-<name>,
// <hash>-<name> or <hash>.
func parsePathArg(a string) (store.PathDigest, error) {
	s := a
	if rest, ok := strings.CutPrefix(s, store.StoreDir+"/"); ok {
		s = rest
		if i := strings.IndexByte(s, '/'); i >= 0 {
			return store.PathDigest{}, fmt.Errorf("argument %q: a file inside store path %s; name the store path itself", a, store.StoreDir+"/"+s[:i])
		}
	} else if strings.Contains(s, "/") {
		return store.PathDigest{}, fmt.Errorf("argument %q: not in %s; want %s/<hash>-<name>, <hash>-<name> or <hash>", a, store.StoreDir, store.StoreDir)
	}
	hashLen := 32
	if len(s) != hashLen {
		if err := store.ValidateBaseName(s); err != nil {
			return store.PathDigest{}, fmt.Errorf("argument %q: not a store path: %w", a, err)
		}
		s = s[:hashLen]
	}
	d, err := store.ParsePathDigest(s)
	if err != nil {
		return d, fmt.Errorf("argument %q: %w", a, err)
	}
	return d, nil
}

// ageValue is a flag holding a duration that may be given in days ("90d")
// or weeks ("2w") besides Go's units ("36h").
type ageValue time.Duration

func (a *ageValue) String() string {
	d := time.Duration(*a)
	if d == 0 {
		return "0"
	}
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

func (a *ageValue) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*a = ageValue(d)
	return nil
}

func (a *ageValue) Type() string { return "age" }

// parseAge parses "90d", "2w", "1.5d", "0", or anything time.ParseDuration
// takes; negative durations are refused.
func parseAge(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			if err != nil || f < 0 || math.IsInf(f, 0) || f*float64(u.d) > math.MaxInt64 {
				return 0, fmt.Errorf("duration %q: want a number of days (90d), weeks (2w) or a Go duration (36h)", s)
			}
			return time.Duration(f * float64(u.d)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want a number of days (90d), weeks (2w) or a Go duration (36h)", s)
	}
	return d, nil
}

// sizeValue is a flag holding a byte count with an optional unit.
type sizeValue uint64

func (v *sizeValue) String() string { return strconv.FormatUint(uint64(*v), 10) }

func (v *sizeValue) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

func (v *sizeValue) Type() string { return "size" }

// sizeUnits are the units parseSize takes, longest first.
var sizeUnits = []struct {
	suffix string
	n      float64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"P", 1 << 50},
	{"B", 1},
}

// parseSize parses a byte count: a number with an optional unit, K, M,
// G, T, P and KiB … PiB counting by 1024, KB … PB by 1000 ("500G",
// "1.5TiB", "200GB", "1048576").
func parseSize(s string) (uint64, error) {
	num, mult := s, 1.0
	for _, u := range sizeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.n
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f < 0 || math.IsNaN(f) || f*mult >= math.MaxUint64 {
		return 0, fmt.Errorf("size %q: want bytes with an optional unit, such as 500G, 1.5TiB or 200GB", s)
	}
	return uint64(f * mult), nil
}

// printExpire prints what a retention run deleted (or would delete) and
// what is left, as a table.
func printExpire(res store.ExpireResult, dryRun bool, maxSize uint64) error {
	verb, rowVerb := "deleted", "paths deleted"
	if dryRun {
		verb, rowVerb = "would delete", "paths to delete"
	}
	for _, p := range res.Deleted {
		fmt.Printf("%s %s/%s (%d bytes of NAR, last used %s, by %s)\n", verb, store.StoreDir, p.Path,
			p.NARSize, p.LastAccess.Format(time.RFC3339), p.Reason)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range []struct {
		v    any
		name string
	}{
		{len(res.Deleted), rowVerb},
		{res.DeletedNARBytes, "NAR bytes of them"},
		{res.Paths, "paths left"},
		{res.NARBytes, "NAR bytes of them"},
		{res.Pinned, "pinned paths left"},
		{res.FirstSeen, "paths seen for the first time (counted as used now)"},
		{res.Skipped, "paths kept as used or pinned meanwhile"},
	} {
		fmt.Fprintf(tw, "%v\t  %s\t\n", r.v, r.name)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !res.Fits {
		fmt.Printf("pinned paths alone exceed --max-size %d: the store does not fit\n", maxSize)
	}
	return nil
}
