package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

func TestParseAge(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90d", 90 * day, true},
		{"1.5d", 36 * time.Hour, true},
		{"2w", 14 * day, true},
		{"36h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"0", 0, true},
		{"0d", 0, true},
		{"", 0, false},
		{"d", 0, false},
		{"-1d", 0, false},
		{"-1h", 0, false},
		{"90", 0, false},
		{"ninety days", 0, false},
		{"1e300d", 0, false},
	} {
		got, err := parseAge(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseAge(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tc.in) {
			t.Errorf("parseAge(%q): error %q does not name the value", tc.in, err)
		}
	}
	var a ageValue
	if err := a.Set("90d"); err != nil || a.String() != "90d" {
		t.Errorf("ageValue 90d: %q, %v", a.String(), err)
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"500G", 500 << 30, true},
		{"500GiB", 500 << 30, true},
		{"200GB", 200e9, true},
		{"1.5T", 3 << 39, true},
		{"1048576", 1 << 20, true},
		{"64K", 64 << 10, true},
		{"10MB", 10e6, true},
		{"7B", 7, true},
		{"0", 0, true},
		{"", 0, false},
		{"G", 0, false},
		{"-1G", 0, false},
		{"5X", 0, false},
		{"1e30T", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParsePathArg(t *testing.T) {
	t.Parallel()
	const hash = "0c6kzph7l0dcbfmjap64f0czdafn3b7x"
	want, err := store.ParsePathDigest(hash)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"/nix/store/" + hash + "-hello-2.12.1", true},
		{hash + "-hello-2.12.1", true},
		{hash, true},
		{"/nix/store/" + hash, true},
		{"/nix/store/" + hash + "-hello-2.12.1/bin/hello", false},
		{"/usr/" + hash + "-hello", false},
		{"hello", false},
		{hash[:31], false},
		{strings.ToUpper(hash), false},
		{hash + "-bad name", false},
		{"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x", false}, // 'e' is not nixbase32
	} {
		got, err := parsePathArg(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != want) {
			t.Errorf("parsePathArg(%q) = %s, %v; want ok %v", tc.in, got, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tc.in) {
			t.Errorf("parsePathArg(%q): error %q does not name the argument", tc.in, err)
		}
	}
}

// cliStore is a store with paths made in this process, for the commands
// to work on.
type cliStore struct {
	dir   string
	paths []*store.PathInfo
	// frames[i] are the frame files added when path i was stored.
	frames [][]string
}

// newCLIStore stores one path per name, each with a file of its own
// contents, packing each into frames of its own.
func newCLIStore(t *testing.T, names ...string) *cliStore {
	t.Helper()
	ctx := context.Background()
	c := &cliStore{dir: filepath.Join(t.TempDir(), "data")}
	s, err := pebblestore.Open(c.dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	for _, name := range names {
		nar := e2eNAROf(e2eTokFile(strings.Repeat("contents of "+name+"\n", 200)))
		res, err := narrender.Ingest(ctx, bytes.NewReader(nar), s, castore.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		root := res.Root
		root.Name = name
		p := &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		before := cliFrameFiles(t, c.dir)
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		var added []string
		for _, f := range cliFrameFiles(t, c.dir) {
			if !slices.Contains(before, f) {
				added = append(added, f)
			}
		}
		c.paths = append(c.paths, p)
		c.frames = append(c.frames, added)
	}
	return c
}

func cliFrameFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// present lists the paths in the store.
func (c *cliStore) present(t *testing.T) []string {
	t.Helper()
	s, err := pebblestore.OpenReadOnly(c.dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []string
	if err := store.NewIndex(s, s).List(context.Background(), func(p *store.PathInfo) error {
		out = append(out, p.Path)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func (c *cliStore) run(t *testing.T, args ...string) e2eResult {
	t.Helper()
	return e2eInvocation{Args: append(args[:1:1], append([]string{args[1], "--data", c.dir}, args[2:]...)...)}.run(t)
}

const (
	cliPathA = "0c6kzph7l0dcbfmjap64f0czdafn3b7x-hello-2.12.1"
	cliPathB = "0dxzkflshz3w8ac8bc2p0v3xfbi1szmd-glibc-2.38"
	cliPathC = "1c6kzph7l0dcbfmjap64f0czdafn3b7x-c"
)

// TestPathDeleteCommand: arguments in each form; a bad one is named and
// nothing is deleted; what was not there is reported.
func TestPathDeleteCommand(t *testing.T) {
	t.Parallel()
	c := newCLIStore(t, cliPathA, cliPathB, cliPathC)
	all := c.present(t)
	res := c.run(t, "path", "delete", "/nix/store/"+cliPathA, "not-a-path")
	if res.Err == nil || !strings.Contains(res.Stderr, `"not-a-path"`) {
		t.Fatalf("delete with a bad argument: %v, %s; want an error naming it", res.Err, res.Stderr)
	}
	if got := c.present(t); !slices.Equal(got, all) {
		t.Fatalf("a refused delete changed the store: %v", got)
	}
	absent := "1dxzkflshz3w8ac8bc2p0v3xfbi1szmd"
	res = c.run(t, "path", "delete", "--json", "/nix/store/"+cliPathA, cliPathB[:32], absent)
	if res.Err != nil {
		t.Fatalf("delete: %v\n%s", res.Err, res.Stderr)
	}
	var out pathResult
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		t.Fatalf("%v: %s", err, res.Stdout)
	}
	if !slices.Equal(out.Done, []string{"/nix/store/" + cliPathA, "/nix/store/" + cliPathB}) || !slices.Equal(out.Absent, []string{absent}) {
		t.Errorf("delete printed %+v", out)
	}
	if got := c.present(t); !slices.Equal(got, []string{cliPathC}) {
		t.Errorf("left %v; want %s", got, cliPathC)
	}
	res = c.run(t, "path", "delete", cliPathC)
	if res.Err != nil || string(res.Stdout) != "deleted: /nix/store/"+cliPathC+"\n" {
		t.Errorf("delete, text: %v, %q", res.Err, res.Stdout)
	}
}

// TestPathPinExpireCommands: pin, list pins, expire by size keeping the
// pin (a dry run first, which changes nothing), unpin.
func TestPathPinExpireCommands(t *testing.T) {
	t.Parallel()
	c := newCLIStore(t, cliPathA, cliPathB, cliPathC)
	all := c.present(t)
	if res := c.run(t, "path", "pin", cliPathC, cliPathA[:32]); res.Err != nil {
		t.Fatalf("pin: %v\n%s", res.Err, res.Stderr)
	}
	res := c.run(t, "path", "pins", "--json")
	var pins []store.Pin
	if err := json.Unmarshal(res.Stdout, &pins); err != nil || res.Err != nil {
		t.Fatalf("pins: %v, %v: %s", res.Err, err, res.Stdout)
	}
	if len(pins) != 2 || pins[0].Path != "/nix/store/"+cliPathA || pins[1].Path != "/nix/store/"+cliPathC {
		t.Fatalf("pins = %+v", pins)
	}
	if res := c.run(t, "path", "unpin", cliPathA); res.Err != nil || !strings.Contains(string(res.Stdout), "unpinned: /nix/store/"+cliPathA) {
		t.Fatalf("unpin: %v, %s %s", res.Err, res.Stdout, res.Stderr)
	}
	if res := c.run(t, "path", "expire"); res.Err == nil {
		t.Errorf("expire without a limit succeeded")
	}
	if res := c.run(t, "path", "expire", "--retention", "ninety"); res.Err == nil || !strings.Contains(res.Stderr, "ninety") {
		t.Errorf("expire --retention ninety: %v, %s", res.Err, res.Stderr)
	}
	for _, dry := range []bool{true, false} {
		args := []string{"path", "expire", "--max-size", "1", "--retention", "90d", "--json"}
		if dry {
			args = append(args, "--dry-run")
		}
		res := c.run(t, args...)
		if res.Err != nil {
			t.Fatalf("%v: %v\n%s", args, res.Err, res.Stderr)
		}
		var out store.ExpireResult
		if err := json.Unmarshal(res.Stdout, &out); err != nil {
			t.Fatal(err)
		}
		var deleted []string
		for _, p := range out.Deleted {
			deleted = append(deleted, p.Path)
		}
		slices.Sort(deleted)
		if !slices.Equal(deleted, []string{cliPathA, cliPathB}) || out.Fits || out.Pinned != 1 || out.DryRun != dry {
			t.Errorf("dry run %v: %+v; want %s and %s deleted, %s kept pinned, not fitting", dry, out, cliPathA, cliPathB, cliPathC)
		}
		want := all
		if !dry {
			want = []string{cliPathC}
		}
		if got := c.present(t); !slices.Equal(got, want) {
			t.Errorf("dry run %v: left %v; want %v", dry, got, want)
		}
	}
}

// verifyOut runs verify with args and decodes its JSON.
func (c *cliStore) verify(t *testing.T, args ...string) (verifyOutput, e2eResult) {
	t.Helper()
	res := c.run(t, append([]string{"verify", "--json"}, args...)...)
	var out verifyOutput
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		t.Fatalf("verify %v: %v: %s\n%s", args, err, res.Stdout, res.Stderr)
	}
	return out, res
}

// TestVerifyCommand: a clean store verifies clean; a deleted chunk and a
// flipped byte in a frame file are found (the second only with
// --read-data), the exit status is non-zero, --repair removes exactly the
// two broken paths, and a second verify is clean.
func TestVerifyCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newCLIStore(t, cliPathA, cliPathB, cliPathC)
	for _, args := range [][]string{nil, {"--read-data"}} {
		out, res := c.verify(t, args...)
		if res.Err != nil || !out.OK || out.Paths != 3 {
			t.Fatalf("verify %v of a clean store: %v, %+v\n%s", args, res.Err, out, res.Stderr)
		}
	}
	if res := c.run(t, "verify", "--read-data"); res.Err != nil || !strings.Contains(string(res.Stdout), "3 store paths") {
		t.Fatalf("verify, text: %v, %s", res.Err, res.Stdout)
	}

	// Break c by deleting its chunk, a by damaging its frame.
	s, err := pebblestore.Open(c.dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.DeleteChunk(ctx, c.paths[2].Root.Digest); err != nil || !ok {
		t.Fatalf("DeleteChunk: %v, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(c.frames[0]) == 0 {
		t.Fatal("path a has no frame of its own")
	}
	for _, f := range c.frames[0] {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	out, res := c.verify(t)
	if res.Err == nil || out.OK || !slices.Equal(out.Broken, []string{cliPathC}) {
		t.Fatalf("verify: exit %v, broken %v; want non-zero, %s", res.Err, out.Broken, cliPathC)
	}
	out, res = c.verify(t, "--read-data")
	if res.Err == nil || !slices.Equal(out.Broken, []string{cliPathA, cliPathC}) {
		t.Fatalf("verify --read-data: exit %v, broken %v; want non-zero, %s and %s", res.Err, out.Broken, cliPathA, cliPathC)
	}
	frame := filepath.Base(c.frames[0][0])
	text := c.run(t, "verify", "--read-data")
	if !strings.Contains(string(text.Stdout), frame) || !strings.Contains(string(text.Stdout), c.paths[2].Root.Digest.String()) {
		t.Errorf("verify's report names neither the frame %s nor the missing chunk:\n%s", frame, text.Stdout)
	}
	out, res = c.verify(t, "--read-data", "--repair")
	if res.Err == nil || !slices.Equal(out.Removed, []string{cliPathA, cliPathC}) {
		t.Fatalf("verify --repair: exit %v, removed %v; want %s and %s", res.Err, out.Removed, cliPathA, cliPathC)
	}
	if got := c.present(t); !slices.Equal(got, []string{cliPathB}) {
		t.Fatalf("left after repair: %v; want %s", got, cliPathB)
	}
	out, res = c.verify(t, "--read-data")
	if res.Err != nil || !out.OK || out.Paths != 1 {
		t.Fatalf("verify after repair: %v, %+v", res.Err, out)
	}
}

// TestGCRetention: `nixcas gc --max-size` deletes the least recently used
// unpinned paths first and collects their data in the same run; a dry run
// lists them and deletes nothing.
func TestGCRetention(t *testing.T) {
	t.Parallel()
	c := newCLIStore(t, cliPathA, cliPathB, cliPathC)
	all := c.present(t)
	if res := c.run(t, "path", "pin", cliPathC); res.Err != nil {
		t.Fatalf("pin: %v\n%s", res.Err, res.Stderr)
	}
	for _, dry := range []bool{true, false} {
		args := []string{"gc", "--json", "--grace", "0", "--max-size", "1"}
		if dry {
			args = append(args, "--dry-run")
		}
		res := c.run(t, args...)
		if res.Err != nil {
			t.Fatalf("%v: %v\n%s", args, res.Err, res.Stderr)
		}
		var out gcReport
		if err := json.Unmarshal(res.Stdout, &out); err != nil {
			t.Fatalf("%v: %v: %s", args, err, res.Stdout)
		}
		if out.Retention == nil || len(out.Retention.Deleted) != 2 || out.Retention.DryRun != dry {
			t.Fatalf("%v: retention %+v; want 2 paths deleted", args, out.Retention)
		}
		want, live := all, uint64(3)
		if !dry {
			want, live = []string{cliPathC}, 1
		}
		if got := c.present(t); !slices.Equal(got, want) {
			t.Errorf("%v: left %v; want %v", args, got, want)
		}
		if out.PathsLive != live {
			t.Errorf("%v: %d paths live; want %d", args, out.PathsLive, live)
		}
		if !dry && out.ChunksDeleted == 0 {
			t.Errorf("%v: no chunk deleted: %+v", args, out)
		}
	}
	if out, res := c.verify(t, "--read-data"); res.Err != nil || len(out.Problems) != 0 {
		t.Errorf("verify after gc: %v, %+v", res.Err, out)
	}
}
