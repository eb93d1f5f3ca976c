package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/storepath"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

func newPullCommand() *cobra.Command {
	var (
		cf     clientFlags
		root   string
		to     string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "pull --server ADDR (STOREPATH... | --root ROOT) --to DIR",
		Short: "Write a tree from the server to disk, fetching only the chunks the local cache lacks",
		Long: `Write the tree of a store path (its PathInfo is looked up on the server),
or the tree ROOT (a JSON root entry, as push and "nar ingest" print), to
DIR, which must not exist: directories, executable and other files,
symlinks. Only chunks missing from the local chunk cache (--cache) are
fetched; every chunk is verified on arrival, every file against its
BLAKE3 digest before it is renamed into place, and the tree appears at DIR
only once complete. With --json, prints
{"path":"/nix/store/...","root":ROOT,"narHash":"sha256:...","narSize":N,
"bytesReceived":N,"chunksFetched":N,"chunksFromCache":N}: path only for a
STOREPATH, whose narHash and narSize are the server's record; for --root
they are computed from the tree pulled. bytesReceived counts the bytes of
the messages carrying chunks on the wire.

With more than one STOREPATH, DIR is a directory (created if missing)
and each path is written to DIR/<base name>, which must not exist. The
paths are pulled together: their PathInfos and directories are asked
for 16 at a time over the one connection, and the chunk lists and
missing chunks of all of them in shared batches, so that many small
paths do not cost several round trips each. --json then prints
{"paths":[{"path":...,"root":...,"narHash":...,"narSize":N},...],
"bytesReceived":N,"chunksFetched":N,"chunksFromCache":N}.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (len(args) > 0) == (root != "") {
				return errors.New("give exactly one of STOREPATH... and --root")
			}
			c, cache, closeAll, err := cf.dial(ctx)
			if err != nil {
				return err
			}
			defer closeAll()
			if len(args) > 1 {
				return pullPaths(ctx, c, args, to, asJSON, closeAll)
			}
			var (
				e   castore.Entry
				out pullOutput
				st  client.PullStats
			)
			if root != "" {
				if err := json.Unmarshal([]byte(root), &e); err != nil {
					return fmt.Errorf("--root: %w", err)
				}
				if st, err = c.Pull(ctx, e, to); err != nil {
					return err
				}
			} else {
				d, err := storePathDigest(args[0])
				if err != nil {
					return err
				}
				info, err := c.GetPathInfo(ctx, d)
				if err != nil {
					return err
				}
				e = info.Root
				out.Path, out.NARHash, out.NARSize = info.AbsolutePath(), info.NARHash(), info.NARSize
				var base string
				if st, base, err = c.PullPath(ctx, info, to); err != nil {
					return err
				}
				if base != "" {
					out.Base = store.StoreDir + "/" + base
				}
			}
			out.Root, out.PullStats = e, st
			out.Root.Name = ""
			if out.NARHash == "" {
				// Every chunk of the tree is in the cache now.
				h := sha256.New()
				n := &countingWriter{w: h}
				if err := narrender.Render(ctx, n, cache, out.Root); err != nil {
					return fmt.Errorf("hashing the NAR of %s: %w", to, err)
				}
				out.NARHash, out.NARSize = "sha256:"+nixbase32.EncodeToString(h.Sum(nil)), n.n
			}
			if err := closeAll(); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			_, err = fmt.Printf("%s: %d chunks fetched (%d bytes), %d from the cache\n", to, st.ChunksFetched, st.BytesReceived, st.ChunksFromCache)
			return err
		},
	}
	cf.registerPull(cmd)
	cmd.Flags().StringVar(&root, "root", "", `root entry as JSON, e.g. {"directory":{"digest":"...","size":3}}`)
	cmd.Flags().StringVar(&to, "to", "", "where to write the tree (must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the root, NAR hash and size, and transfer counts as JSON")
	cmd.MarkFlagRequired("to")
	return cmd
}

// storePathDigest parses an absolute store path and returns its digest.
func storePathDigest(path string) (store.PathDigest, error) {
	sp, err := storepath.FromAbsolutePath(filepath.Clean(path))
	if err != nil {
		return store.PathDigest{}, fmt.Errorf("%s: %w", path, err)
	}
	return store.ParsePathDigest(sp.String()[:32])
}

// pullPaths pulls several store paths into the directory to, each to
// to/<base name>, with client.PullMany.
func pullPaths(ctx context.Context, c *client.Client, paths []string, to string, asJSON bool, closeAll func() error) error {
	infos := make([]*store.PathInfo, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, p := range paths {
		d, err := storePathDigest(p)
		if err != nil {
			return err
		}
		g.Go(func() error {
			info, err := c.GetPathInfo(gctx, d)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			infos[i] = info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	out := pullManyOutput{Paths: make([]pulledPath, len(infos))}
	targets := make([]client.PullTarget, len(infos))
	for i, info := range infos {
		targets[i] = client.PullTarget{Root: info.Root, Dst: filepath.Join(to, info.Path)}
		o := &out.Paths[i]
		o.Path, o.NARHash, o.NARSize, o.Root = info.AbsolutePath(), info.NARHash(), info.NARSize, info.Root
		o.Root.Name = ""
	}
	st, err := c.PullMany(ctx, targets)
	if err != nil {
		return err
	}
	out.PullStats = st
	if err := closeAll(); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(out)
	}
	_, err = fmt.Printf("%s: %d paths, %d chunks fetched (%d bytes), %d from the cache\n", to, len(infos), st.ChunksFetched, st.BytesReceived, st.ChunksFromCache)
	return err
}

// pullManyOutput is what pull --json prints for several store paths.
type pullManyOutput struct {
	Paths []pulledPath `json:"paths"`
	client.PullStats
}

// pulledPath is one store path of pullManyOutput.
type pulledPath struct {
	Path    string        `json:"path"`
	Root    castore.Entry `json:"root"`
	NARHash string        `json:"narHash"`
	NARSize uint64        `json:"narSize"`
}

// pullOutput is what pull --json prints.
type pullOutput struct {
	// Path is the store path, when one was pulled.
	Path string `json:"path,omitempty"`
	// Base is the store path whose tree was the base (--base auto).
	Base    string        `json:"base,omitempty"`
	Root    castore.Entry `json:"root"`
	NARHash string        `json:"narHash"`
	NARSize uint64        `json:"narSize"`
	client.PullStats
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}
