package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// clientFlags are the flags of the commands that talk to a server.
type clientFlags struct {
	server      string
	tlsCA       string
	tokenFile   string
	cache       string
	compression string
	wireLevel   int
	base        string
	wholeFrames bool // pulls: frames a pull needs most of come whole, as stored
}

func (f *clientFlags) register(cmd *cobra.Command) {
	f.wholeFrames = true
	cmd.Flags().StringVar(&f.server, "server", "127.0.0.1:9000", "nixcas server: HOST, HOST:PORT, grpc://HOST[:PORT] or grpcs://HOST[:PORT] (TLS); default port 9000, grpcs 443")
	cmd.Flags().StringVar(&f.tlsCA, "tls-ca", "", "PEM file of CA certificates trusted for grpcs:// besides the system's")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token the server asks for")
	cmd.Flags().StringVar(&f.cache, "cache", defaultCacheDir(), "local chunk cache directory (while another process uses it, a private temporary one)")
	cmd.Flags().StringVar(&f.compression, "wire-compression", "zstd", "compression of the chunks on the wire: zstd (one zstd stream per call), zstd-messages (each message on its own, as servers before chunk streams), or none (chunks as stored, lz4)")
	cmd.Flags().IntVar(&f.wireLevel, "wire-level", 0, "zstd level of chunk streams as zstd numbers them (pushes encode at it, pulls ask the server for it); 0: the default, zstd 6-9 (\"better\"); 10 and above: \"best\", slower")
	cmd.Flags().StringVar(&f.base, "base", "auto", "a tree both sides hold, typically the previous version of what is moved, whose files are zstd dictionaries for the files at the same paths: a store path, a root entry as JSON, auto (for each store path, the last one of its family this cache moved: same name without the version) or none")
}

// registerPull adds the flags of commands that pull.
func (f *clientFlags) registerPull(cmd *cobra.Command) {
	f.register(cmd)
	cmd.Flags().BoolVar(&f.wholeFrames, "whole-frames", true, "fetch a frame the server stores whole, as stored, when at least half of it is needed (false: every chunk by ReadChunks, decoded and compressed again by the server)")
}

// defaultCacheDir is the per-user chunk cache: $XDG_CACHE_HOME/nixcas,
// else ~/.cache/nixcas.
func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "nixcas")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "nixcas")
	}
	return "nixcas-cache"
}

// endpoint parses --server and --tls-ca.
func (f *clientFlags) endpoint() (client.Endpoint, *tls.Config, error) {
	ep, err := client.ParseEndpoint(f.server)
	if err != nil {
		return client.Endpoint{}, nil, fmt.Errorf("--server: %w", err)
	}
	if !ep.TLS {
		if f.tlsCA != "" {
			return client.Endpoint{}, nil, fmt.Errorf("--tls-ca is for grpcs:// servers; --server %s is plain text", f.server)
		}
		return ep, nil, nil
	}
	cfg, err := client.TLSConfig(f.tlsCA)
	if err != nil {
		return client.Endpoint{}, nil, fmt.Errorf("--tls-ca: %w", err)
	}
	return ep, cfg, nil
}

// dial opens the cache and a client of the server; the returned function
// closes both (it is safe to call twice).
func (f *clientFlags) dial(ctx context.Context) (*client.Client, *client.Cache, func() error, error) {
	ep, tlsConfig, err := f.endpoint()
	if err != nil {
		return nil, nil, nil, err
	}
	token, err := readToken(f.tokenFile)
	if err != nil {
		return nil, nil, nil, err
	}
	cache, err := client.OpenCache(ctx, f.cache, client.CacheOptions{
		// Chunks put one by one stay inline, not packed into zstd frames
		// (packing then unpacking every chunk pulled cost more than the
		// transfer); frames a pull receives whole are kept as they came
		// (client/held.go). No decoded frames are kept on disk: a cache
		// is read once or twice, not served.
		Pebble: pebblestore.Options{CacheSize: 16 << 20, MemTableSize: 16 << 20, Frames: pebblestore.FrameOptions{Off: true, DecodedCacheSize: -1}},
		Note:   func(s string) { fmt.Fprintln(os.Stderr, "nixcas: note:", s) },
	})
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := client.Dial(ep.Addr, client.Options{Token: token, TLS: tlsConfig, Cache: cache, Compression: f.compression, WireLevel: f.wireLevel, NoFrames: !f.wholeFrames, AutoBase: f.base == "auto", Progress: terminalProgress()})
	if err != nil {
		cache.Close()
		return nil, nil, nil, err
	}
	if f.base != "auto" && f.base != "none" {
		base, err := resolveRoot(ctx, c, f.base)
		if err != nil {
			c.Close()
			cache.Close()
			return nil, nil, nil, fmt.Errorf("--base: %w", err)
		}
		c.SetBase(&base)
	}
	var once sync.Once
	closeAll := func() (err error) {
		once.Do(func() {
			c.Close()
			err = cache.Close()
		})
		return err
	}
	return c, cache, closeAll, nil
}

// terminalProgress draws progress bars on stderr when it is a terminal,
// and nothing otherwise.
func terminalProgress() func(what string, total int64) client.Progress {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return func(what string, total int64) client.Progress {
		return terminalBar{progressbar.DefaultBytes(total, what)}
	}
}

type terminalBar struct{ bar *progressbar.ProgressBar }

func (b terminalBar) Add(n int64) { b.bar.Add64(n) }
func (b terminalBar) Finish()     { b.bar.Finish() }

// pushOutput is what push prints for each tree or store path.
type pushOutput struct {
	// Path is the store path, for store paths.
	Path string `json:"path,omitempty"`
	// Base is the store path whose tree was the base (--base auto).
	Base    string        `json:"base,omitempty"`
	Root    castore.Entry `json:"root"`
	NARHash string        `json:"narHash"`
	NARSize uint64        `json:"narSize"`
	client.PushStats
}

func (o pushOutput) print(asJSON bool, what string) error {
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(o)
	}
	_, err := fmt.Printf("%s: %d chunks sent (%d bytes), %d the server had\n", what, o.ChunksSent, o.BytesSent, o.ChunksSkipped)
	return err
}

func newPushCommand() *cobra.Command {
	var (
		cf       clientFlags
		nixStore string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "push --server ADDR PATH...",
		Short: "Push directories, NAR files or Nix store paths, sending only the chunks the server lacks",
		Long: `Push each PATH to the server: a directory, a NAR file, or a Nix store path
(/nix/store/..., or a symlink to one such as ./result). A store path is
pushed with its closure, read through nix (path-info and store dump-path),
each path with its references, deriver, content address and signatures
and after the paths it refers to, so that legacy Nix can then fetch it
from the server's HTTP binary cache.

Files are cut into chunks in the local chunk cache (--cache); only the
chunks the server lacks are sent. With --json, prints one line per tree or
store path:
{"root":ROOT,"narHash":"sha256:...","narSize":N,"bytesSent":N,"chunksSent":N,"chunksSkipped":N}
(store paths also have "path"). bytesSent counts the bytes of the messages
carrying chunks on the wire (compressed, digests and framing included).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, cache, closeAll, err := cf.dial(ctx)
			if err != nil {
				return err
			}
			defer closeAll()
			var storePaths []string
			for _, arg := range args {
				if p, ok := asStorePath(arg, nixStore != ""); ok {
					storePaths = append(storePaths, p)
					continue
				}
				fi, err := os.Stat(arg)
				if err != nil {
					return err
				}
				var (
					in   io.ReadCloser
					size int64 = -1
				)
				if fi.IsDir() {
					in = client.DumpReader(arg)
				} else {
					if in, err = os.Open(arg); err != nil {
						return err
					}
					size = fi.Size()
				}
				bar := newProgress(size, "ingesting "+filepath.Base(arg))
				res, err := narrender.Ingest(ctx, io.TeeReader(in, bar), cache, castore.WriterOptions{})
				bar.Finish()
				in.Close()
				if err != nil {
					return fmt.Errorf("ingesting %s: %w", arg, err)
				}
				st, err := c.PushTree(ctx, res.Root)
				if err != nil {
					return fmt.Errorf("pushing %s: %w", arg, err)
				}
				out := pushOutput{Root: res.Root, NARHash: "sha256:" + nixbase32.EncodeToString(res.NARSha256[:]), NARSize: res.NARSize, PushStats: st}
				if err := out.print(asJSON, arg); err != nil {
					return err
				}
			}
			if len(storePaths) == 0 {
				return closeAll()
			}
			err = c.PushClosure(ctx, client.Nix{Store: nixStore}, storePaths, func(p client.PushedPath) error {
				root := p.Info.Root
				root.Name = ""
				out := pushOutput{Path: p.Info.AbsolutePath(), Root: root, NARHash: p.Info.NARHash(), NARSize: p.Info.NARSize, PushStats: p.PushStats}
				if p.Base != "" {
					out.Base = store.StoreDir + "/" + p.Base
				}
				return out.print(asJSON, p.Info.AbsolutePath())
			})
			if err != nil {
				return err
			}
			return closeAll()
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&nixStore, "nix-store", "", "Nix store to read store paths from, passed to nix as --store (default: nix's own)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per tree or store path")
	return cmd
}

// asStorePath reports whether arg names a store path (itself, or through
// symlinks when they resolve to one), returning it. With another Nix
// store, store paths need not exist here and are taken as given.
func asStorePath(arg string, otherStore bool) (string, bool) {
	p := arg
	if !otherStore {
		if r, err := filepath.EvalSymlinks(arg); err == nil {
			p = r
		}
	}
	if !filepath.IsAbs(p) || !strings.HasPrefix(p, storepath.StoreDir+"/") {
		return "", false
	}
	if _, err := storepath.FromAbsolutePath(filepath.Clean(p)); err != nil {
		return "", false
	}
	return filepath.Clean(p), true
}

// resolveRoot returns the root entry arg names: a root entry as JSON, or
// a store path, looked up on the server.
func resolveRoot(ctx context.Context, c *client.Client, arg string) (castore.Entry, error) {
	var e castore.Entry
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		err := json.Unmarshal([]byte(arg), &e)
		return e, err
	}
	sp, err := storepath.FromAbsolutePath(filepath.Clean(arg))
	if err != nil {
		return e, fmt.Errorf("%s: %w", arg, err)
	}
	d, err := store.ParsePathDigest(sp.String()[:32])
	if err != nil {
		return e, err
	}
	info, err := c.GetPathInfo(ctx, d)
	if err != nil {
		return e, err
	}
	e = info.Root
	e.Name = ""
	return e, nil
}
