package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

func newNARCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "nar", Short: "Ingest and render NARs"}
	cmd.AddCommand(newNARIngestCommand(), newNARRenderCommand())
	return cmd
}

// ingestOutput is what `nar ingest` prints.
type ingestOutput struct {
	NARHash string        `json:"narHash"`
	NARSize uint64        `json:"narSize"`
	Root    castore.Entry `json:"root"`
}

func newNARIngestCommand() *cobra.Command {
	var (
		sf      storeFlags
		chunker castore.ChunkerOptions
	)
	cmd := &cobra.Command{
		Use:   "ingest [FILE|-]",
		Short: "Ingest one NAR into the store and print its root entry as JSON",
		Long: `Ingest one NAR (from FILE, or standard input when FILE is - or absent)
into the store and print {"narHash":"sha256:...","narSize":N,"root":ROOT}.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := io.Reader(os.Stdin)
			name := "standard input"
			var size int64 = -1
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in, name = f, args[0]
				if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
					size = fi.Size()
				}
			}
			s, err := sf.open()
			if err != nil {
				return err
			}
			defer s.Close()
			bar := newProgress(size, "ingesting")
			res, err := narrender.Ingest(cmd.Context(), io.TeeReader(in, bar), s, castore.WriterOptions{Chunker: chunker})
			bar.Finish()
			if err != nil {
				return fmt.Errorf("ingesting %s: %w", name, err)
			}
			out := ingestOutput{
				NARHash: "sha256:" + nixbase32.EncodeToString(res.NARSha256[:]),
				NARSize: res.NARSize,
				Root:    res.Root,
			}
			if err := s.Close(); err != nil {
				return err
			}
			return json.NewEncoder(os.Stdout).Encode(out)
		},
	}
	sf.register(cmd)
	d := castore.DefaultChunkerOptions
	cmd.Flags().IntVar(&chunker.MinSize, "chunk-min", d.MinSize, "smallest chunk in bytes")
	cmd.Flags().IntVar(&chunker.AvgSize, "chunk-avg", d.AvgSize, "average chunk size in bytes, a power of two")
	cmd.Flags().IntVar(&chunker.MaxSize, "chunk-max", d.MaxSize, "largest chunk in bytes")
	return cmd
}

func newNARRenderCommand() *cobra.Command {
	var (
		sf   storeFlags
		root string
	)
	cmd := &cobra.Command{
		Use:   "render --root ROOT",
		Short: "Write the NAR of a stored tree to standard output",
		Long: `Write the NAR of the tree ROOT to standard output, where ROOT is the
JSON root entry that "nixcas nar ingest" printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var e castore.Entry
			if err := json.Unmarshal([]byte(root), &e); err != nil {
				return fmt.Errorf("--root: %w", err)
			}
			s, err := sf.openReadOnly()
			if err != nil {
				return err
			}
			defer s.Close()
			w := bufio.NewWriterSize(os.Stdout, 1<<20)
			if err := narrender.Render(cmd.Context(), w, s, e); err != nil {
				return err
			}
			return w.Flush()
		},
	}
	sf.registerReadOnly(cmd)
	cmd.Flags().StringVar(&root, "root", "", `root entry as JSON, e.g. {"directory":{"digest":"...","size":3}}`)
	cmd.MarkFlagRequired("root")
	return cmd
}
