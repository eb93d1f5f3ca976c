package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestSynopsisListsFlags: the synopsis of every command lists every one of
// its flags.
func TestSynopsisListsFlags(t *testing.T) {
	t.Parallel()
	var check func(cmd *cobra.Command)
	n := 0
	check = func(cmd *cobra.Command) {
		for _, sub := range cmd.Commands() {
			check(sub)
		}
		if !cmd.Runnable() {
			return
		}
		n++
		cmd.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			if f.Name != "help" && !f.Hidden && !strings.Contains(cmd.Use, "--"+f.Name) {
				t.Errorf("%s: synopsis %q lacks --%s", cmd.CommandPath(), cmd.Use, f.Name)
			}
		})
		if strings.Contains(cmd.UseLine(), "[flags]") {
			t.Errorf("%s: synopsis %q ends in [flags]", cmd.CommandPath(), cmd.UseLine())
		}
	}
	check(newRootCommand())
	if n < 10 {
		t.Errorf("checked %d commands, want every command", n)
	}
}
