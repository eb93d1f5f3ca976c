package main

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestContribFiles: the example configuration sets only serve's flags, with
// values they accept, and the systemd unit's ExecStart passes only flags
// serve has.
func TestContribFiles(t *testing.T) {
	t.Parallel()
	serve := newServeCommand()
	if err := applyConfigFile(serve.Flags(), "../../contrib/systemd/nixcas.toml"); err != nil {
		t.Errorf("contrib/systemd/nixcas.toml: %v", err)
	}
	if got := serve.Flags().Lookup("listen-http").Value.String(); got != "0.0.0.0:8080" {
		t.Errorf("listen-http from the example: %q", got)
	}

	f, err := os.Open("../../contrib/systemd/nixcas.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var exec string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			exec = v
		}
	}
	args := strings.Fields(exec)
	if len(args) < 2 || !strings.HasSuffix(args[0], "/nixcas") || args[1] != "serve" {
		t.Fatalf("ExecStart=%s: want nixcas serve …", exec)
	}
	flags := 0
	for _, a := range args[2:] {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		flags++
		if serve.Flags().Lookup(name) == nil {
			t.Errorf("ExecStart passes --%s, which serve does not have", name)
		}
	}
	if flags == 0 {
		t.Errorf("ExecStart=%s passes no flags", exec)
	}
}
