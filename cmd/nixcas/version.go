package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

// versionString describes the running binary from its build information:
// the module version ("(devel)" when built from a checkout), the VCS
// revision and commit time ("+modified" when the tree had changes), the
// Go version, and the zstd library that compresses frames (the C one in a
// build with cgo, which compresses faster).
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "nixcas (no build information)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var b strings.Builder
	fmt.Fprintf(&b, "nixcas %s", bi.Main.Version)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, " revision %s", rev)
		if settings["vcs.modified"] == "true" {
			b.WriteString("+modified")
		}
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
	} else {
		b.WriteString(" revision unknown")
	}
	fmt.Fprintf(&b, " %s, frames compressed by the zstd %s library", bi.GoVersion, pebblestore.FrameCompressor)
	return b.String()
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionString())
			return err
		},
	}
}
