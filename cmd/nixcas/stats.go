package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/store"
)

func newStoreCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Inspect, compact and copy the store"}
	cmd.AddCommand(newStoreStatsCommand(), newStoreCompactCommand(), newStoreCopyCommand())
	return cmd
}

// statsOutput is what `store stats` prints.
type statsOutput struct {
	castore.Stats
	DiskBytes int64 `json:"diskBytes"`
	// The decoded frames kept on disk for reads (part of diskBytes when
	// in the data directory); hits and misses only from a server.
	DecodedCacheBytes  int64   `json:"decodedCacheBytes"`
	DecodedCacheFiles  int64   `json:"decodedCacheFiles"`
	DecodedCacheHits   *uint64 `json:"decodedCacheHits,omitempty"`
	DecodedCacheMisses *uint64 `json:"decodedCacheMisses,omitempty"`
	// With --unreferenced: the chunks no store path or kept file reaches.
	UnreferencedChunks     *uint64 `json:"unreferencedChunks,omitempty"`
	UnreferencedChunkBytes *uint64 `json:"unreferencedChunkBytes,omitempty"`
}

func newStoreStatsCommand() *cobra.Command {
	var (
		sf           storeFlags
		asJSON       bool
		server       string
		unreferenced bool
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print what the store holds",
		Args:  cobra.NoArgs,
		Long: `Print what the store in --data holds, opening it read-only (a store a
running server has open is refused, naming the server's process), or, with
--server http://HOST:PORT, what a running server's store holds, read from
the gauges on its /metrics. With --unreferenced, also what no store path
and no kept file (log, debug info, realisation) reaches, chunks that a
garbage collection would free (for example those of rejected uploads or
killed ingests): this reads every PathInfo, directory and blob index and
holds the reachable chunk digests in memory (about 80 bytes each).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out statsOutput
			if server != "" {
				var err error
				if out, err = serverStats(cmd.Context(), server); err != nil {
					return err
				}
			} else {
				s, err := sf.openReadOnly()
				if err != nil {
					return err
				}
				defer s.Close()
				if out.Stats, err = s.Stats(cmd.Context()); err != nil {
					return err
				}
				if out.DiskBytes, err = s.DiskBytes(); err != nil {
					return err
				}
				dc := s.DecodedCacheStats()
				out.DecodedCacheBytes, out.DecodedCacheFiles = dc.Bytes, int64(dc.Files)
				if unreferenced {
					u, err := store.NewIndex(s, s).Unreferenced(cmd.Context(), s)
					if err != nil {
						return err
					}
					out.UnreferencedChunks, out.UnreferencedChunkBytes = &u.Chunks, &u.Bytes
				}
			}
			st := out.Stats
			if asJSON {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			for _, row := range []struct {
				name string
				v    any
			}{
				{"logical bytes (files ingested, repeats counted)", st.LogicalBytes},
				{"unique chunk bytes", st.UniqueChunkBytes},
				{"stored bytes (compressed frames and unpacked chunks)", st.StoredBytes},
				{"frames", st.Frames},
				{"disk bytes (data directory)", out.DiskBytes},
				{"decoded frames kept for reads", out.DecodedCacheFiles},
				{"decoded frame bytes kept for reads", out.DecodedCacheBytes},
				{"chunks", st.Chunks},
				{"blob indexes (files of several chunks)", st.Blobs},
				{"directories", st.Directories},
			} {
				fmt.Fprintf(tw, "%v\t  %s\t\n", row.v, row.name)
			}
			if out.DecodedCacheHits != nil {
				fmt.Fprintf(tw, "%v\t  %s\t\n", *out.DecodedCacheHits, "chunk reads from decoded frames kept (hits)")
				fmt.Fprintf(tw, "%v\t  %s\t\n", *out.DecodedCacheMisses, "frames decompressed for reads (misses)")
			}
			if out.UnreferencedChunks != nil {
				fmt.Fprintf(tw, "%v\t  %s\t\n", *out.UnreferencedChunks, "unreferenced chunks")
				fmt.Fprintf(tw, "%v\t  %s\t\n", *out.UnreferencedChunkBytes, "unreferenced chunk bytes (uncompressed)")
			}
			return tw.Flush()
		},
	}
	sf.registerReadOnly(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&server, "server", "", "a running server's HTTP address (http://HOST:PORT) to ask instead of opening --data")
	cmd.Flags().BoolVar(&unreferenced, "unreferenced", false, "also count the chunks no store path or kept file reaches (reads the whole index)")
	cmd.MarkFlagsMutuallyExclusive("server", "data")
	cmd.MarkFlagsMutuallyExclusive("server", "unreferenced")
	return cmd
}
