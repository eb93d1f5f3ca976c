package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nix-community/go-nix/pkg/storepath"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
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
{"bytesReceived":N,"chunksFetched":N,"chunksFromCache":N}, bytesReceived
counting the bytes of the messages carrying chunks on the wire.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if (len(args) == 1) == (root != "") {
				return errors.New("give exactly one of STOREPATH and --root")
			}
			c, _, closeAll, err := cf.dial()
			if err != nil {
				return err
			}
			defer closeAll()
			var e castore.Entry
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
			}
			st, err := c.Pull(ctx, e, to)
			if err != nil {
				return err
			}
			if err := closeAll(); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(st)
			}
			_, err = fmt.Printf("%s: %d chunks fetched (%d bytes), %d from the cache\n", to, st.ChunksFetched, st.BytesReceived, st.ChunksFromCache)
			return err
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&root, "root", "", `root entry as JSON, e.g. {"directory":{"digest":"...","size":3}}`)
	cmd.Flags().StringVar(&to, "to", "", "where to write the tree (must not exist)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("to")
	return cmd
}
