package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/internal/testtree"
)

// copyStats returns the Stats of the store that flags open (`store stats
// --json`).
func copyStats(t *testing.T, flags ...string) castore.Stats {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"store", "stats", "--json"}, flags...)}.mustSucceed(t)
	var st castore.Stats
	if err := json.Unmarshal(res.Stdout, &st); err != nil {
		t.Fatalf("store stats %v: %v\n%s", flags, err, res.Stdout)
	}
	return st
}

// copyVerify runs `verify --read-data` on the store that flags open and
// fails the test unless it is clean.
func copyVerify(t *testing.T, flags ...string) {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"verify", "--read-data", "--json"}, flags...)}.run(t)
	var out struct {
		OK    bool `json:"ok"`
		Paths int  `json:"paths"`
	}
	if err := json.Unmarshal(res.Stdout, &out); err != nil || res.Err != nil || !out.OK {
		t.Fatalf("verify --read-data %v: %v (decode: %v)\nstdout: %s\nstderr: %s", flags, res.Err, err, res.Stdout, res.Stderr)
	}
}

// TestStoreCopyRoundTrip: a store that Nix 2.8 filled (`nix copy --to`,
// a closure of three paths, one with 3 MiB of random data, so that there
// are several frames and chunks still queued) is copied from the
// embedded layout into PostgreSQL and MinIO, with a copy killed (SIGKILL)
// at several moments before it, and from there back into the embedded
// layout. Each copy verifies clean with --read-data, has the same Stats
// as the original, and serves every path so that `nix copy --from`
// (signatures checked) gets the NAR Nix dumps, byte for byte. Copying
// again into a store that is not empty is refused.
func TestStoreCopyRoundTrip(t *testing.T) {
	t.Parallel()
	e2eRequireNix(t)
	dir := t.TempDir()
	keyDir := t.TempDir()
	sk, pk := filepath.Join(keyDir, "sk"), filepath.Join(keyDir, "pk")
	if out, err := exec.Command("nix-store", "--generate-binary-cache-key", "copy-1", sk, pk).CombinedOutput(); err != nil {
		t.Fatalf("generating a key: %v\n%s", err, out)
	}
	pubKey, err := os.ReadFile(pk)
	if err != nil {
		t.Fatal(err)
	}

	// The original: an embedded store filled by Nix.
	nixStore := filepath.Join(dir, "nix")
	tree := filepath.Join(dir, "tree")
	testtree.Build(t, tree, grpcEdgeCase(t, "package-like"))
	big := make([]byte, 3<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(big)
	if err := os.WriteFile(filepath.Join(tree, "random.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	dirPath := grpcNix(t, nixStore, "nix-store", "--add", tree)
	expr := fmt.Sprintf(`let d = builtins.storePath %q; b = builtins.toFile "b" "uses ${d}\n"; in builtins.toFile "a" "uses ${b} and ${d}\n"`, dirPath)
	top := strings.Trim(grpcNix(t, nixStore, "nix-instantiate", "--eval", "--read-write-mode", "-E", expr), `"`)
	paths := strings.Fields(grpcNix(t, nixStore, "nix-store", "--query", "--requisites", top))
	if len(paths) != 3 {
		t.Fatalf("closure of %s: %v, want 3 paths", top, paths)
	}
	a := filepath.Join(dir, "a")
	srv := startGRPCServe(t, a, "--hot-frame-size", "1M") // several frames
	grpcNix(t, nixStore, "nix", "--extra-experimental-features", "nix-command", "copy", "--to", "http://"+srv.httpAddr+"?compression=xz", top)
	srv.stop(t)
	want := copyStats(t, "--data", a)
	if want.Frames < 2 || want.Chunks == 0 {
		t.Fatalf("the original store has %d frames and %d chunks; the test wants frames", want.Frames, want.Chunks)
	}

	meta := testpg.New(t)
	m := testminio.Start(t)
	b := filepath.Join(dir, "b")
	blobs := m.URL("frames", "")
	bFlags := []string{"--data", b, "--meta", meta, "--blobs", blobs}
	toB := []string{"store", "copy", "--from-data", a, "--to-data", b, "--to-meta", meta, "--to-blobs", blobs}

	// Killed copies: whatever moment the kill came, the target is either
	// refused as incomplete, still empty, or complete; never a part of
	// the source that passes for the whole. A run after an incomplete one
	// resumes it.
	incomplete, complete := false, false
	for _, delay := range []time.Duration{30 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		cmd := exec.Command(e2eBinary, toB...)
		cmd.Env = e2eEnv()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		werr := cmd.Wait()
		if werr == nil && incomplete && !strings.Contains(stdout.String(), "resumed an interrupted copy") {
			t.Errorf("a copy into an incomplete target finished without saying it resumed:\n%s", stdout.String())
		}
		res := e2eInvocation{Args: append([]string{"store", "stats", "--json"}, bFlags...)}.run(t)
		switch {
		case res.Err != nil && strings.Contains(res.Stderr, "incomplete copy"):
			incomplete = true
			t.Logf("killed after %v: the target is refused as an incomplete copy", delay)
		case res.Err != nil:
			t.Fatalf("killed after %v: store stats: %v\n%s", delay, res.Err, res.Stderr)
		default:
			var st castore.Stats
			if err := json.Unmarshal(res.Stdout, &st); err != nil {
				t.Fatal(err)
			}
			switch {
			case st == want:
				// Finished; the kill may have come while it closed the
				// stores or printed its summary.
				complete = true
				t.Logf("killed after %v (exit %v): the copy had finished:\n%s", delay, werr, stdout.String())
			case st == (castore.Stats{}):
				t.Logf("killed after %v: the target is still empty", delay)
			default:
				t.Fatalf("killed after %v (exit %v): the target opens with stats %+v, neither empty nor the source's %+v\n%s",
					delay, werr, st, want, stderr.String())
			}
		}
		if complete {
			break
		}
	}
	if !complete {
		res := e2eInvocation{Args: toB}.mustSucceed(t)
		if incomplete && !strings.Contains(string(res.Stdout), "resumed an interrupted copy") {
			t.Errorf("a copy into an incomplete target did not say it resumed:\n%s", res.Stdout)
		}
		t.Logf("store copy to PostgreSQL and MinIO:\n%s", res.Stdout)
	}

	c := filepath.Join(dir, "c")
	res := e2eInvocation{Args: []string{"store", "copy", "--from-data", b, "--from-meta", meta, "--from-blobs", blobs, "--to-data", c}}.mustSucceed(t)
	t.Logf("store copy back to the embedded layout:\n%s", res.Stdout)

	for _, st := range []struct {
		name  string
		flags []string
	}{
		{"postgres+s3", bFlags},
		{"embedded again", []string{"--data", c}},
	} {
		copyVerify(t, st.flags...)
		if got := copyStats(t, st.flags...); got != want {
			t.Errorf("%s: stats %+v, want the original's %+v", st.name, got, want)
		}
		srv := startGRPCServe(t, st.flags[1], append(st.flags[2:], "--sign-key", sk)...)
		other := filepath.Join(dir, "nix-"+strings.Fields(st.name)[0])
		grpcNix(t, other, "nix", "--extra-experimental-features", "nix-command", "copy",
			"--option", "trusted-public-keys", strings.TrimSpace(string(pubKey)),
			"--from", "http://"+srv.httpAddr, top)
		srv.stop(t)
		for _, p := range paths {
			wantNAR, err := exec.Command("nix-store", "--dump", nixStore+p).Output()
			if err != nil {
				t.Fatal(err)
			}
			gotNAR, err := exec.Command("nix-store", "--dump", other+p).Output()
			if err != nil {
				t.Fatalf("%s: %s was not copied: %v", st.name, p, err)
			}
			if !bytes.Equal(gotNAR, wantNAR) {
				t.Errorf("%s: the NAR of %s differs from Nix's (%d bytes, want %d; first difference at byte %d)",
					st.name, p, len(gotNAR), len(wantNAR), e2eFirstDiff(gotNAR, wantNAR))
			}
		}
	}

	// Targets that are not empty.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"embedded", []string{"--to-data", c}},
		{"postgres", []string{"--to-data", filepath.Join(dir, "d"), "--to-meta", meta, "--to-blobs", m.URL("other", "")}},
	} {
		res := e2eInvocation{Args: append([]string{"store", "copy", "--from-data", a}, tc.args...)}.run(t)
		if msg := e2eErrorMessage(res.Stderr); res.Err == nil || !strings.Contains(msg, "is not empty") {
			t.Errorf("copy into the non-empty %s store: %v, %q; want a refusal saying it is not empty", tc.name, res.Err, msg)
		}
	}
	if got := copyStats(t, "--data", c); got != want {
		t.Errorf("after the refused copy the target's stats are %+v, want %+v", got, want)
	}
}

// TestStoreCopyFlags: flag combinations that name no store, or one store
// twice, are refused with a message naming the flag, before anything is
// opened.
func TestStoreCopyFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	pg := "postgres://u@127.0.0.1:1/db"
	s3 := "s3://bucket/p?endpoint=127.0.0.1:1&tls=false"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no target", []string{"--from-data", a}, "--from-data and --to-data are both required"},
		{"no source", []string{"--to-data", b}, "--from-data and --to-data are both required"},
		{"same directory", []string{"--from-data", a, "--to-data", a + "/"}, "copy into a directory of its own"},
		{"same database", []string{"--from-data", a, "--from-meta", pg, "--to-data", b, "--to-meta", pg}, "copy into a database of its own"},
		{"same bucket", []string{"--from-data", a, "--from-blobs", s3, "--to-data", b, "--to-blobs", s3}, "copy into a bucket or prefix of its own"},
		{"meta not postgres", []string{"--from-data", a, "--to-data", b, "--to-meta", "mysql://x/y"}, `--to-meta "mysql://x/y": want a postgres:// URL`},
		{"bad blobs URL", []string{"--from-data", a, "--from-blobs", "s3://", "--to-data", b, "--to-blobs", s3}, "--from-blobs"},
		{"missing source", []string{"--from-data", a, "--to-data", b}, "source: opening store " + a + " read-only"},
		{"arguments", []string{"--from-data", a, "--to-data", b, "extra"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e2eInvocation{Args: append([]string{"store", "copy"}, tc.args...)}.run(t)
			if msg := e2eErrorMessage(res.Stderr); res.Err == nil || !strings.Contains(msg, tc.want) {
				t.Errorf("store copy %v: %v, %q; want an error containing %q", tc.args, res.Err, msg, tc.want)
			}
		})
	}
	if _, err := os.Stat(b); err == nil {
		t.Errorf("a refused copy created the target %s", b)
	}
}
