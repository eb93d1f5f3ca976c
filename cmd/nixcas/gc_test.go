package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// gcStorePaths ingests n release-like trees of about size bytes each as
// store paths into the store in dir, and returns their PathInfos.
func gcStorePaths(t *testing.T, dir string, n int, size int64) []*store.PathInfo {
	t.Helper()
	ctx := context.Background()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	var paths []*store.PathInfo
	for i := range n {
		// Each tree has files of its own and a file shared with every
		// other tree of the same parity, so that frames hold chunks of
		// several paths.
		nar := e2eWriteNARFile(t, testtree.Dir(testtree.Entries{
			"bin": testtree.Dir(testtree.Entries{
				"tool":   testtree.File(testtree.Mixed(uint64(i+1), size/2)),
				"shared": testtree.File(testtree.Mixed(uint64(100+i%2), size/2)),
			}),
			"VERSION": testtree.File(testtree.Text(fmt.Sprintf("release %d\n", i))),
		}))
		f, err := os.Open(nar)
		if err != nil {
			t.Fatal(err)
		}
		res, err := narrender.Ingest(ctx, f, s, castore.WriterOptions{})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("%02dc6kzph7l0dcbfmjap64f0czdafn3b7-release-%d", i, i)
		root := res.Root
		root.Name = name
		p := &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// gcDelete deletes paths from the store in dir.
func gcDelete(t *testing.T, dir string, paths []*store.PathInfo) {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	for _, p := range paths {
		if ok, err := x.Delete(context.Background(), p.Digest()); err != nil || !ok {
			t.Fatalf("delete %s: %v, %v", p.Path, ok, err)
		}
	}
}

// gcCheck opens the store in dir as the next process would (deleting
// frames a crash left unregistered), renders every live path byte for
// byte, and compares the counters with a fresh count and the frame
// registry with the frame files.
func gcCheck(t *testing.T, dir string, live []*store.PathInfo) castore.Stats {
	t.Helper()
	ctx := context.Background()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range live {
		h := sha256.New()
		root := p.Root
		root.Name = ""
		if err := narrender.Render(ctx, h, s, root); err != nil {
			t.Fatalf("render %s: %v", p.Path, err)
		}
		if !bytes.Equal(h.Sum(nil), p.NARSha256[:]) {
			t.Fatalf("render %s: wrong bytes", p.Path)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := s.Recount(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != fresh {
		t.Fatalf("counters %+v, a fresh count %+v", st, fresh)
	}
	if files, size := frameDirFiles(t, dir); uint64(files) != st.Frames || uint64(size) != st.StoredBytes {
		t.Fatalf("stats count %d frames, %d stored bytes; the store holds %d frame files of %d bytes", st.Frames, st.StoredBytes, files, size)
	}
	return st
}

// gcRun runs `nixcas gc --json` with args and decodes its output.
func gcRun(t *testing.T, args ...string) store.GCResult {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"gc", "--json"}, args...)}.mustSucceed(t)
	var out store.GCResult
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		t.Fatalf("gc output %q: %v", res.Stdout, err)
	}
	return out
}

// TestGCCommandKilled: `nixcas gc --dry-run` changes nothing; `nixcas gc`
// killed with SIGKILL at several points of its run leaves a store in which
// every live path renders byte for byte and the counters agree with a
// fresh count and verify --read-data is clean; a last run completes the
// job, after which a dry run finds nothing more to free.
//
// Not parallel: it kills at fractions of runs timed just before, which a
// neighbour's load would shift.
func TestGCCommandKilled(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	paths := gcStorePaths(t, dir, 6, 6<<20)
	gcDelete(t, dir, paths[:4:4])
	live := paths[4:]
	before := gcCheck(t, dir, live)

	args := []string{"--data", dir, "--grace", "0s", "--rewrite-below", "0.9", "--level", "best"}
	dry := gcRun(t, append(args, "--dry-run")...)
	if !dry.DryRun || dry.PathsLive != 2 || dry.ChunksDeleted == 0 || dry.ChunkBytesFreed == 0 {
		t.Fatalf("dry run: %+v", dry)
	}
	if after := gcCheck(t, dir, live); after != before {
		t.Fatalf("the dry run changed the store: %+v, before %+v", after, before)
	}

	// Time whole runs on copies, then kill runs at fractions of the
	// fastest.
	var (
		probe string
		full  store.GCResult
	)
	took := fastestOf(3, func() time.Duration {
		probe = copyStore(t, dir, "probe")
		start := time.Now()
		full = gcRun(t, "--data", probe, "--grace", "0s", "--rewrite-below", "0.9", "--level", "best")
		return time.Since(start)
	})
	t.Logf("the fastest of three whole runs: %s; the last: %+v", took.Round(time.Millisecond), full.GCResult)
	probeStats := gcCheck(t, probe, live)
	if probeStats.Chunks >= before.Chunks || probeStats.StoredBytes >= before.StoredBytes || full.FramesRewritten == 0 {
		t.Fatalf("nothing freed or rewritten: before %+v, after %+v", before, probeStats)
	}
	kills := 0
	for _, f := range []float64{0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95} {
		// Each kill on a fresh copy of the store as it was before.
		killed := copyStore(t, dir, "killed")
		kargs := []string{"gc", "--data", killed, "--grace", "0s", "--rewrite-below", "0.9", "--level", "best"}
		if !killAfter(t, time.Duration(f*float64(took)), kargs...) {
			continue
		}
		kills++
		gcCheck(t, killed, live)
		// verify, reading every chunk, finds every live path whole.
		res := e2eInvocation{Args: []string{"verify", "--json", "--read-data", "--data", killed}}.run(t)
		var v verifyOutput
		if err := json.Unmarshal(res.Stdout, &v); err != nil || res.Err != nil || !v.OK {
			t.Errorf("kill at %g: verify --read-data: %v, %v: %s\n%s", f, res.Err, err, res.Stdout, res.Stderr)
		}
		// The next run finishes the job: the store then holds what the
		// probe, collected in one go, holds, and nothing is left to free.
		gcRun(t, kargs[1:]...)
		after := gcCheck(t, killed, live)
		if _, err := os.Stat(filepath.Join(killed, "gc-marks")); !os.IsNotExist(err) {
			t.Errorf("kill at %g: the mark set is still there after a whole run: %v", f, err)
		}
		if probeStats.Chunks != after.Chunks || probeStats.UniqueChunkBytes != after.UniqueChunkBytes ||
			probeStats.Blobs != after.Blobs || probeStats.Directories != after.Directories {
			t.Errorf("kill at %g: collected after the kill %+v, in one run %+v", f, after, probeStats)
		}
		again := gcRun(t, append(kargs[1:], "--dry-run")...)
		if again.ChunksDeleted+again.BlobsDeleted+again.DirectoriesDeleted != 0 || again.FramesDeleted+again.FramesRewritten != 0 {
			t.Errorf("kill at %g: after the next run a dry run still finds %+v", f, again.GCResult)
		}
	}
	t.Logf("killed %d of 7 runs", kills)
	if kills < 4 {
		t.Fatalf("only %d of 7 collections were killed before they ended", kills)
	}
}
