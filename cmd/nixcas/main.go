package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nixcas:", err)
		os.Exit(1)
	}
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
		newBenchCommand(),
	)
	return root
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
	data string
}

func (f *storeFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.data, "data", defaultDataDir(), "data directory of the store")
}

func (f *storeFlags) open() (*castore.PebbleStore, error) {
	s, err := castore.OpenPebble(f.data, castore.PebbleOptions{})
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", f.data, err)
	}
	return s, nil
}
