package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCPUProfileEnv: NIXCAS_CPUPROFILE makes any command write a CPU
// profile of its run (gzipped, as runtime/pprof writes it) to the file
// named, "%p" replaced by the process id.
//
// Not parallel: it sets NIXCAS_CPUPROFILE in the environment.
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

// TestCPUProfileWriteError: a profile that cannot be written (a full
// disk: /dev/full) fails the command that was profiled, naming the
// variable, rather than leaving a profile cut short unnoticed.
//
// Not parallel: it sets NIXCAS_CPUPROFILE in the environment.
func TestCPUProfileWriteError(t *testing.T) {
	t.Setenv("NIXCAS_CPUPROFILE", "/dev/full")
	err := run([]string{"version"})
	if err == nil || !strings.Contains(err.Error(), "NIXCAS_CPUPROFILE") || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("profiling to /dev/full: %v; want the write's ENOSPC, naming NIXCAS_CPUPROFILE", err)
	}
}
