package main

import (
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
		Use:   "pull --server ADDR (STOREPATH | --root ROOT) --to DIR",
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
the messages carrying chunks on the wire.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (len(args) == 1) == (root != "") {
				return errors.New("give exactly one of STOREPATH and --root")
			}
			c, cache, closeAll, err := cf.dial(ctx)
			if err != nil {
				return err
			}
			defer closeAll()
			var (
				e   castore.Entry
				out pullOutput
			)
			if root != "" {
				if err := json.Unmarshal([]byte(root), &e); err != nil {
					return fmt.Errorf("--root: %w", err)
				}
			} else {
				sp, err := storepath.FromAbsolutePath(filepath.Clean(args[0]))
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				d, err := store.ParsePathDigest(sp.String()[:32])
				if err != nil {
					return err
				}
				info, err := c.GetPathInfo(ctx, d)
				if err != nil {
					return err
				}
				e = info.Root
				out.Path, out.NARHash, out.NARSize = info.AbsolutePath(), info.NARHash(), info.NARSize
			}
			st, err := c.Pull(ctx, e, to)
			if err != nil {
				return err
			}
			out.Root, out.PullStats = e, st
			out.Root.Name = ""
			if out.NARHash == "" {
				// Every chunk of the tree is in the cache now.
				h := sha256.New()
				n := &countingWriter{w: h}
				if err := narrender.Render(ctx, n, cache.Store, out.Root); err != nil {
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
	cf.register(cmd)
	cmd.Flags().StringVar(&root, "root", "", `root entry as JSON, e.g. {"directory":{"digest":"...","size":3}}`)
	cmd.Flags().StringVar(&to, "to", "", "where to write the tree (must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the root, NAR hash and size, and transfer counts as JSON")
	cmd.MarkFlagRequired("to")
	return cmd
}

// pullOutput is what pull --json prints.
type pullOutput struct {
	// Path is the store path, when one was pulled.
	Path    string        `json:"path,omitempty"`
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
