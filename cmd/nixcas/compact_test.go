package main

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

// compactJSON is what `store compact --json` prints, as far as these
// tests read it.
type compactJSON struct {
	Chunks        int                   `json:"chunks"`
	DecodedBytes  uint64                `json:"decodedBytes"`
	RewrittenFrom map[string]uint64     `json:"rewrittenBytesFrom"`
	MergedRuns    []pebblestore.RunInfo `json:"mergedRuns"`
	Into          *pebblestore.RunInfo  `json:"into"`
	FramesOut     int                   `json:"framesOut"`
	DryRun        bool                  `json:"dryRun"`
}

func compactRun(t *testing.T, s *e2eStore, args ...string) compactJSON {
	t.Helper()
	res := e2eInvocation{Args: append([]string{"store", "compact", "--data", s.dir, "--json"}, args...)}.mustSucceed(t)
	var out compactJSON
	if err := json.Unmarshal(res.Stdout, &out); err != nil {
		t.Fatalf("store compact %s: %v: %s", strings.Join(args, " "), err, res.Stdout)
	}
	return out
}

// TestStoreCompactTiered: `store compact --fan-out 3` after each of three
// NARs writes the first two as runs of level 0, rewriting only their new
// chunks, and merges both with the third into a run of level 1; a dry run
// of --full counts every byte and changes nothing; --full rewrites every
// byte into the base run. Every NAR renders byte for byte after each.
func TestStoreCompactTiered(t *testing.T) {
	t.Parallel()
	s := newE2EStore(t)
	var (
		roots []e2eIngest
		nars  []string
		news  uint64 // bytes of the first two compactions
		all   uint64
	)
	for i := range 3 {
		nar := killNAR(t, uint64(20+10*i), 2<<20)
		roots = append(roots, s.ingest(t, nar))
		nars = append(nars, nar)
		res := compactRun(t, s, "--fan-out", "3")
		killCheck(t, s, roots, nars)
		t.Logf("compaction %d: %d bytes from %v into %+v", i+1, res.DecodedBytes, res.RewrittenFrom, res.Into)
		if res.Into == nil || res.DecodedBytes == 0 {
			t.Fatalf("compaction %d wrote nothing: %+v", i+1, res)
		}
		if i < 2 {
			if res.Into.Level != 0 || len(res.MergedRuns) != 0 || res.RewrittenFrom["hot"] != res.DecodedBytes {
				t.Fatalf("compaction %d = %+v; want only hot chunks, into level 0", i+1, res)
			}
			news += res.DecodedBytes
		} else if res.Into.Level != 1 || len(res.MergedRuns) != 2 || res.RewrittenFrom["level0"] != news ||
			res.RewrittenFrom["hot"]+news != res.DecodedBytes {
			t.Fatalf("compaction 3 = %+v; want the two runs of level 0 (%d bytes) merged with the new chunks into level 1", res, news)
		}
		all += res.DecodedBytes - res.RewrittenFrom["level0"]
	}

	dry := compactRun(t, s, "--full", "--dry-run")
	if !dry.DryRun || dry.DecodedBytes != all || dry.FramesOut != 0 || dry.Into == nil || dry.Into.Level != pebblestore.LevelBase ||
		!maps.Equal(dry.RewrittenFrom, map[string]uint64{"level1": all}) {
		t.Fatalf("full dry run = %+v; want all %d bytes, from level 1, into the base run", dry, all)
	}
	text := e2eInvocation{Args: []string{"store", "compact", "--data", s.dir, "--full", "--dry-run"}}.mustSucceed(t)
	if !strings.Contains(string(text.Stdout), "of level 1") || !strings.Contains(string(text.Stdout), "merged") {
		t.Errorf("dry run text names no merged run:\n%s", text.Stdout)
	}
	full := compactRun(t, s, "--full")
	if full.DecodedBytes != all || full.Into == nil || full.Into.Level != pebblestore.LevelBase || full.FramesOut == 0 {
		t.Fatalf("full compaction = %+v; want all %d bytes into the base run", full, all)
	}
	killCheck(t, s, roots, nars)
	if again := compactRun(t, s); again.Into != nil || again.DecodedBytes != 0 {
		t.Fatalf("a compaction with nothing new = %+v; want nothing done", again)
	}
}
