package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
)

// killNAR writes the NAR of a release-like tree: a few compressible files
// that differ a little from one seed to the next, and one random file.
func killNAR(t *testing.T, seed uint64, size int64) string {
	t.Helper()
	return e2eWriteNARFile(t, testtree.Dir(testtree.Entries{
		"bin": testtree.Dir(testtree.Entries{
			"tool":  testtree.File(testtree.Mixed(seed, size/2)),
			"other": testtree.File(testtree.Mixed(seed+100, size/4)),
		}),
		"data":    testtree.File(testtree.Random(seed, size/8)),
		"VERSION": testtree.File(testtree.Text(fmt.Sprintf("release %d\n", seed))),
	}))
}

// killAfter runs nixcas with args and kills it with SIGKILL after d, or
// lets it finish if it ends first; it reports whether the kill came first.
func killAfter(t *testing.T, d time.Duration, args ...string) bool {
	t.Helper()
	cmd := exec.Command(e2eBinary, args...)
	cmd.Env = e2eEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("nixcas %s failed before the kill: %v", e2eArgs(args), err)
		}
		return false
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return true
	}
}

// fastestOf returns the shortest of the durations n calls of run return.
// The kill tests time a whole run, then kill later runs at fractions of
// it: timed from one run slowed by other tests' load, the kills would
// come after the end of the quicker runs that follow.
func fastestOf(n int, run func() time.Duration) time.Duration {
	best := run()
	for range n - 1 {
		best = min(best, run())
	}
	return best
}

// copyStore copies the store directory dir (cp -a) to a new directory
// named name in the test's temporary directory, and returns its path.
func copyStore(t *testing.T, dir, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("cp", "-a", dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return dst
}

// frameDirFiles counts the frame files of a store and their bytes.
func frameDirFiles(t *testing.T, dir string) (n, size int64) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n++
		size += info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, size
}

// killCheck renders every earlier root byte for byte.
func killCheck(t *testing.T, s *e2eStore, roots []e2eIngest, nars []string) {
	t.Helper()
	for i, r := range roots {
		e2eCheckRender(t, s, r.Root, nars[i])
	}
}

// killStatsFrames returns the frames `store stats` counts.
func killStatsFrames(t *testing.T, s *e2eStore) (frames, stored int64) {
	t.Helper()
	res := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json"}}.mustSucceed(t)
	var st struct {
		Frames      int64 `json:"frames"`
		StoredBytes int64 `json:"storedBytes"`
	}
	if err := json.Unmarshal(res.Stdout, &st); err != nil {
		t.Fatal(err)
	}
	return st.Frames, st.StoredBytes
}

// TestKillDuringIngestAndCompact kills `nar ingest` and `store compact`
// with SIGKILL at several points of their run: every root ingested before
// renders byte for byte after each kill; the interrupted work completes on
// a rerun; after a final compaction the stats count exactly the frame files
// on disk, and those hold every stored byte.
//
// Not parallel: it kills at fractions of runs timed just before, which a
// neighbour's load would shift.
func TestKillDuringIngestAndCompact(t *testing.T) {
	s := newE2EStore(t)
	var roots []e2eIngest
	var nars []string
	for seed := range uint64(3) {
		nar := killNAR(t, seed+1, 8<<20)
		roots = append(roots, s.ingest(t, nar))
		nars = append(nars, nar)
	}
	killCheck(t, s, roots, nars)

	// Ingest: time whole runs, then kill runs at fractions of the
	// fastest.
	big := killNAR(t, 9, 24<<20)
	full := fastestOf(3, func() time.Duration {
		probe := &e2eStore{dir: filepath.Join(t.TempDir(), "probe")}
		start := time.Now()
		probe.ingest(t, big)
		return time.Since(start)
	})
	kills := 0
	// Each killed run leaves chunks behind that the next one skips, so
	// later runs are shorter: the fractions stay early.
	for _, f := range []float64{0.1, 0.25, 0.4, 0.55, 0.7} {
		if killAfter(t, time.Duration(f*float64(full)), "nar", "ingest", "--data", s.dir, big) {
			kills++
		}
		killCheck(t, s, roots, nars)
	}
	t.Logf("ingest of %s: killed %d of 5 runs", full.Round(time.Millisecond), kills)
	if kills < 2 {
		t.Fatalf("only %d of 5 ingests were killed before they ended", kills)
	}
	roots = append(roots, s.ingest(t, big))
	nars = append(nars, big)
	killCheck(t, s, roots, nars)

	// Compact: likewise.
	full = fastestOf(3, func() time.Duration {
		probeCopy := copyStore(t, s.dir, "probe-compact")
		start := time.Now()
		e2eInvocation{Args: []string{"store", "compact", "--data", probeCopy}}.mustSucceed(t)
		return time.Since(start)
	})
	kills = 0
	for _, f := range []float64{0.1, 0.3, 0.5, 0.7, 0.9} {
		if killAfter(t, time.Duration(f*float64(full)), "store", "compact", "--data", s.dir) {
			kills++
		}
		killCheck(t, s, roots, nars)
	}
	t.Logf("compaction of %s: killed %d of 5 runs", full.Round(time.Millisecond), kills)
	if kills < 3 {
		t.Fatalf("only %d of 5 compactions were killed before they ended", kills)
	}
	res := e2eInvocation{Args: []string{"store", "compact", "--data", s.dir, "--json"}}.mustSucceed(t)
	t.Logf("final compaction: %s", res.Stdout)
	killCheck(t, s, roots, nars)

	// A merge: one more NAR compacted into a run of level 0 of its own
	// (a fan-out of 16 merges nothing here), another NAR, then
	// compactions with a fan-out of 2, which rewrite the runs of level 0
	// with it into a run of a level above.
	for i, fanOut := range []string{"16", ""} {
		more := killNAR(t, uint64(11+i), 8<<20)
		roots = append(roots, s.ingest(t, more))
		nars = append(nars, more)
		if fanOut != "" {
			e2eInvocation{Args: []string{"store", "compact", "--data", s.dir, "--fan-out", fanOut}}.mustSucceed(t)
		}
	}
	var plan struct {
		MergedRuns []pebblestore.RunInfo `json:"mergedRuns"`
		Into       *pebblestore.RunInfo  `json:"into"`
	}
	dry := e2eInvocation{Args: []string{"store", "compact", "--data", s.dir, "--fan-out", "2", "--dry-run", "--json"}}.mustSucceed(t)
	if err := json.Unmarshal([]byte(dry.Stdout), &plan); err != nil || len(plan.MergedRuns) == 0 || plan.Into == nil || plan.Into.Level == 0 {
		t.Fatalf("dry run of the merge: %s (%v); want runs merged into a level above 0", dry.Stdout, err)
	}
	full = fastestOf(3, func() time.Duration {
		probeMerge := copyStore(t, s.dir, "probe-merge")
		start := time.Now()
		e2eInvocation{Args: []string{"store", "compact", "--data", probeMerge, "--fan-out", "2"}}.mustSucceed(t)
		return time.Since(start)
	})
	kills = 0
	for _, f := range []float64{0.2, 0.4, 0.6, 0.8} {
		if killAfter(t, time.Duration(f*float64(full)), "store", "compact", "--data", s.dir, "--fan-out", "2") {
			kills++
		}
		killCheck(t, s, roots, nars)
	}
	t.Logf("merge of %s: killed %d of 4 runs", full.Round(time.Millisecond), kills)
	if kills < 2 {
		t.Fatalf("only %d of 4 merges were killed before they ended", kills)
	}
	res = e2eInvocation{Args: []string{"store", "compact", "--data", s.dir, "--json", "--fan-out", "2"}}.mustSucceed(t)
	t.Logf("final merge: %s", res.Stdout)
	killCheck(t, s, roots, nars)
	frames, stored := killStatsFrames(t, s)
	files, size := frameDirFiles(t, s.dir)
	if frames != files || stored != size || frames == 0 {
		t.Fatalf("stats count %d frames, %d stored bytes; the store holds %d frame files of %d bytes", frames, stored, files, size)
	}
}
