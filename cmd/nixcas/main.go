package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nixcas:", err)
		os.Exit(1)
	}
}

// shutdownGrace is how long a command may take to stop after SIGINT or
// SIGTERM before the process exits without waiting for it (serve bounds
// its own shutdown with --shutdown-timeout instead).
const shutdownGrace = 10 * time.Second

// run runs the command named by args. The first SIGINT or SIGTERM cancels
// its context; if the command has not returned shutdownGrace later, or at
// a second signal, run returns without it. Every command thus ends, even
// one stuck in a write waiting for disk space: the store is then left as
// after a crash, which its write-ahead log recovers from.
func run(args []string) (err error) {
	if path := os.Getenv("NIXCAS_CPUPROFILE"); path != "" {
		stop, perr := startCPUProfile(path)
		if perr != nil {
			return perr
		}
		defer func() {
			if perr := stop(); perr != nil {
				err = errors.Join(err, perr)
			}
		}()
	}
	root := newRootCommand()
	root.SetArgs(args)
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case err := <-done:
		return err
	case s := <-sig:
		cancel()
		var grace <-chan time.Time
		if cmd, _, err := root.Find(args); err != nil || cmd.Name() != "serve" {
			grace = time.After(shutdownGrace)
		}
		select {
		case err := <-done:
			return err
		case <-grace:
			return fmt.Errorf("%v: the command did not stop within %s; exiting without it", s, shutdownGrace)
		case s2 := <-sig:
			return fmt.Errorf("%v, then %v: exiting without waiting for the command", s, s2)
		}
	}
}

// startCPUProfile starts a CPU profile of the process into the file
// path, with every "%p" in it replaced by the process id (so that the
// commands of one run, a server and its clients, each write their own),
// and returns what stops it and closes the file. stop reports the first
// error writing or closing the file (runtime/pprof ignores its write
// errors): a profile cut short is not mistaken for a whole one.
func startCPUProfile(path string) (stop func() error, err error) {
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("NIXCAS_CPUPROFILE: %w", err)
	}
	w := &profileFile{f: f}
	if err := pprof.StartCPUProfile(w); err != nil {
		f.Close()
		return nil, fmt.Errorf("NIXCAS_CPUPROFILE: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		err := errors.Join(w.err, f.Close())
		if err != nil {
			return fmt.Errorf("NIXCAS_CPUPROFILE: %w", err)
		}
		return nil
	}, nil
}

// profileFile is the file a CPU profile is written to, keeping the first
// write error. Only the profiler's goroutine writes it, and stop reads err
// after StopCPUProfile, which returns once the last write is done.
type profileFile struct {
	f   *os.File
	err error
}

func (w *profileFile) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.err = err
	return n, err
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "nixcas",
		Short:         "A content-addressed, chunk-deduplicating store for Nix binary caches",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newVersionCommand())
	root.AddCommand(
		newNARCommand(), newStoreCommand(),
		newServeCommand(), newPushCommand(), newPullCommand(), newProxyCommand(), newImportCommand(),
		newBenchCommand(), newPathCommand(), newVerifyCommand(), newGCCommand(),
	)
	listFlags(root)
	return root
}

// listFlags completes the synopsis (Use) of cmd and of every command
// below it that runs with the flags it does not show yet, as
// [--name VALUE], so that each synopsis lists all its flags.
func listFlags(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		listFlags(sub)
	}
	if !cmd.Runnable() {
		return
	}
	var extra []string
	cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" || strings.Contains(cmd.Use, "--"+f.Name) {
			return
		}
		if f.Value.Type() == "bool" {
			extra = append(extra, "[--"+f.Name+"]")
			return
		}
		extra = append(extra, "[--"+f.Name+" "+flagValueName(f)+"]")
	})
	if len(extra) > 0 {
		cmd.Use += " " + strings.Join(extra, " ")
	}
	cmd.DisableFlagsInUseLine = true
}

// flagValueName is what a flag's value is called in a synopsis.
func flagValueName(f *pflag.Flag) string {
	if name, _ := pflag.UnquoteUsage(f); strings.Contains(f.Usage, "`") {
		return name
	}
	switch name := f.Name; {
	case f.Value.Type() == "int" || f.Value.Type() == "int64" || f.Value.Type() == "uint64":
		return "N"
	case f.Value.Type() == "duration":
		return "DURATION"
	case strings.HasSuffix(name, "file") || strings.HasSuffix(name, "key") || strings.HasSuffix(name, "profile") ||
		name == "tls-ca" || name == "tls-cert" || name == "config" || name == "chart" || name == "json":
		return "FILE"
	case name == "log-format":
		return "text|json"
	case name == "log-level":
		return "debug|info|warn|error"
	case name == "data" || name == "cache" || name == "work" || name == "tree":
		return "DIR"
	case strings.HasSuffix(name, "compression"):
		return "zstd|none"
	case name == "nix-store":
		return "STORE"
	case name == "server" || name == "upstream" || strings.HasPrefix(name, "listen"):
		return "ADDR"
	case f.Value.Type() == "stringSlice":
		return strings.ToUpper(name) + ",..."
	}
	return strings.ToUpper(f.Name)
}

// defaultDataDir is the per-user store: $XDG_DATA_HOME/nixcas, else
// ~/.local/share/nixcas.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "nixcas")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "nixcas")
	}
	return "nixcas-data"
}

// storeFlags are the flags of every command that opens the local store.
type storeFlags struct {
	data         string
	meta         string // PostgreSQL URL of the records; "" keeps them in data
	minFree      sizeValue
	noSpaceGuard bool
	blobs        blobFlags
	// indexCache is Pebble's block cache; 0 keeps the store's default.
	indexCache sizeValue
	// copyTarget: the store is opened by `store copy` as its target,
	// which may be an incomplete copy (every other command refuses one).
	copyTarget bool
	// noDecodedCache: reads go to the frames themselves, never to decoded
	// frames kept on disk (verify checks the frames).
	noDecodedCache bool
	// hotFrameSize and hotLevel set the hot frames new chunks are packed
	// into; 0 keeps the store's defaults.
	hotFrameSize sizeValue
	hotLevel     zstdLevelValue
	// noCallFilter writes frames without the x86 call filter.
	noCallFilter bool
}

// registerReadOnly adds the flags of commands that only read the store.
func (f *storeFlags) registerReadOnly(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.data, "data", defaultDataDir(), "data directory of the store")
	f.blobs.register(cmd)
	cmd.Flags().StringVar(&f.meta, "meta", "", "postgres://USER@HOST:PORT/DB?... keeps the store's records in that PostgreSQL database (shared by several servers) and only the frames in --data")
}

// register adds the flags of commands that write to the store.
func (f *storeFlags) register(cmd *cobra.Command) {
	f.registerReadOnly(cmd)
	f.minFree = sizeValue(pebblestore.DefaultOptions.MinFreeBytes)
	cmd.Flags().Var(&f.minFree, "min-free",
		"disk space to keep free beyond room to flush the memtables: `SIZE` such as 2G; writes are refused below")
	// For tests of what happens when a write meets a full disk anyway.
	cmd.Flags().BoolVar(&f.noSpaceGuard, "no-space-guard", false, "do not check free space before writing")
	cmd.Flags().MarkHidden("no-space-guard")
	cmd.Flags().Var(&f.hotFrameSize, "hot-frame-size",
		fmt.Sprintf("uncompressed bytes of chunks per hot frame, the frames new chunks are packed into: `SIZE` such as 4M, from 64K to %dM (0 or unset: %d MiB)", pebblestore.MaxFrameSize/2>>20, pebblestore.DefaultFrameOptions.Size>>20))
	cmd.Flags().Var(&f.hotLevel, "hot-level", "zstd level of hot frames: "+strings.Join(zstdLevelNames, ", ")+" (unset: default)")
	cmd.Flags().BoolVar(&f.noCallFilter, "no-call-filter", false, "write new frames without the x86 call filter, as binaries before store layout 4 did (a store that never wrote or pulled a filtered frame stays at layout 3 or below, which they open; a pull still imports the server's filtered frames)")
}

// registerIndexCache adds --index-cache, for commands that serve.
func (f *storeFlags) registerIndexCache(cmd *cobra.Command) {
	cmd.Flags().Var(&f.indexCache, "index-cache", fmt.Sprintf("memory for the index's blocks (chunk index, directories, PathInfo): `SIZE` such as 1G; chunk lookups stay in memory while it holds the chunk index, `nixcas bench scale` measures 80 to 120 bytes of metadata a chunk (0 or unset: %d MiB)", pebblestore.DefaultOptions.CacheSize>>20))
}

// open opens the store for reading and writing, creating it if need be.
func (f *storeFlags) open() (*pebblestore.Store, error) {
	return f.openWith(false, pebblestore.Options{})
}

// openReadOnly opens an existing store for reading; it creates and changes
// nothing.
func (f *storeFlags) openReadOnly() (*pebblestore.Store, error) {
	return f.openWith(true, pebblestore.Options{})
}

// openWith opens the store with o, read-only or as open does (with the
// flags' disk-space guard, recording uses).
func (f *storeFlags) openWith(readOnly bool, o pebblestore.Options) (*pebblestore.Store, error) {
	objects, err := f.blobs.objects(context.Background(), f.data, readOnly)
	if err != nil {
		return nil, err
	}
	o.Objects = objects
	o = f.options(o, readOnly)
	if f.meta != "" {
		s, err := pebblestore.OpenPostgres(context.Background(), f.meta, f.data, o)
		if err != nil {
			return nil, fmt.Errorf("opening store %s with records in %s: %w", f.data, redactURL(f.meta), err)
		}
		return s, nil
	}
	if readOnly {
		s, err := pebblestore.OpenReadOnly(f.data, o)
		if err != nil {
			return nil, fmt.Errorf("opening store %s read-only: %w", f.data, err)
		}
		return s, nil
	}
	s, err := pebblestore.Open(f.data, o)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", f.data, err)
	}
	return s, nil
}

// options returns o with what the flags set: the disk-space guard and
// use records for a store opened to write, the index cache, the copy
// target.
func (f *storeFlags) options(o pebblestore.Options, readOnly bool) pebblestore.Options {
	o.CopyTarget = f.copyTarget
	if f.noDecodedCache {
		o.Frames.DecodedCacheSize = -1
	}
	if f.indexCache != 0 {
		o.CacheSize = int64(f.indexCache)
	}
	if readOnly {
		if f.meta != "" {
			o.ReadOnly = true // OpenPostgres has no read-only twin
		}
		return o
	}
	o.MinFreeBytes, o.NoSpaceGuard, o.RecordUses = uint64(f.minFree), f.noSpaceGuard, true
	if f.hotFrameSize != 0 {
		o.Frames.Size = int(min(f.hotFrameSize, 1<<40))
	}
	if f.hotLevel != 0 {
		o.Frames.Level = zstd.EncoderLevel(f.hotLevel)
	}
	o.Frames.NoCallFilter = f.noCallFilter
	return o
}

// redactURL returns a database URL without its password, for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the --meta database"
	}
	return u.Redacted()
}
