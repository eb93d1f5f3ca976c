package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
)

func newStoreCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "store", Short: "Inspect the store"}
	cmd.AddCommand(newStoreStatsCommand())
	return cmd
}

// statsOutput is what `store stats` prints.
type statsOutput struct {
	castore.Stats
	DiskBytes int64 `json:"diskBytes"`
}

func newStoreStatsCommand() *cobra.Command {
	var (
		sf     storeFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print what the store holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := sf.openReadOnly()
			if err != nil {
				return err
			}
			defer s.Close()
			st, err := s.Stats(cmd.Context())
			if err != nil {
				return err
			}
			out := statsOutput{Stats: st}
			if out.DiskBytes, err = s.DiskBytes(); err != nil {
				return err
			}
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
				{"stored bytes (compressed chunks)", st.StoredBytes},
				{"disk bytes (data directory)", out.DiskBytes},
				{"chunks", st.Chunks},
				{"blob indexes (files of several chunks)", st.Blobs},
				{"directories", st.Directories},
			} {
				fmt.Fprintf(tw, "%v\t  %s\t\n", row.v, row.name)
			}
			return tw.Flush()
		},
	}
	sf.registerReadOnly(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
