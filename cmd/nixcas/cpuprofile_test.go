package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestCPUProfileEnv: NIXCAS_CPUPROFILE makes any command write a CPU
// profile of its run (gzipped, as runtime/pprof writes it) to the file
// named, "%p" replaced by the process id.
func TestCPUProfileEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("NIXCAS_CPUPROFILE", filepath.Join(dir, "cpu-%p.pprof"))
	if err := run([]string{"version"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu-"+strconv.Itoa(os.Getpid())+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		t.Errorf("profile of %d bytes does not start as gzip", len(b))
	}
}
