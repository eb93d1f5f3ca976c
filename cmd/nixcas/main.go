package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

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
