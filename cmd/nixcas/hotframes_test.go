package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/internal/testtree"
)

// TestHotFrameFlags: --hot-frame-size and --hot-level reach the store a
// write command opens (smaller frames make more of them, each level stores
// its own count of bytes, and the NAR renders back either way), and bad values
// are refused with an error naming the flag or the bound.
func TestHotFrameFlags(t *testing.T) {
	ref := e2eDumpTree(t, testtree.Tree{Name: "hot", Root: testtree.Dir(testtree.Entries{
		"a": testtree.File(testtree.Mixed(1, 600<<10)),
		"b": testtree.File(testtree.Mixed(2, 600<<10)),
	})})
	framesAndBytes := func(args ...string) (uint64, int64) {
		t.Helper()
		s := newE2EStore(t)
		res := e2eInvocation{Args: append([]string{"nar", "ingest", "--data", s.dir, ref.Path}, args...)}.mustSucceed(t)
		in := e2eParseIngest(t, res.Stdout)
		e2eCheckRender(t, s, in.Root, ref.Path)
		var st struct {
			Frames      uint64 `json:"frames"`
			StoredBytes int64  `json:"storedBytes"`
		}
		out := e2eInvocation{Args: []string{"store", "stats", "--data", s.dir, "--json"}}.mustSucceed(t)
		if err := json.Unmarshal(out.Stdout, &st); err != nil {
			t.Fatalf("store stats: %v: %s", err, out.Stdout)
		}
		return st.Frames, st.StoredBytes
	}
	defFrames, defBytes := framesAndBytes()
	smallFrames, _ := framesAndBytes("--hot-frame-size", "64K")
	_, fastBytes := framesAndBytes("--hot-level", "fastest")
	_, bestBytes := framesAndBytes("--hot-level", "best")
	t.Logf("default: %d frames, %d bytes; 64 KiB frames: %d; fastest %d bytes, best %d", defFrames, defBytes, smallFrames, fastBytes, bestBytes)
	if defFrames == 0 || smallFrames < 10*defFrames {
		t.Errorf("--hot-frame-size 64K: %d frames, default %d; want at least ten times as many", smallFrames, defFrames)
	}
	// Which level stores least depends on the data; each stores its own
	// count of bytes, and fastest more than the default.
	if !(bestBytes != defBytes && defBytes < fastBytes) {
		t.Errorf("stored bytes: --hot-level best %d, default %d, fastest %d; want three different counts, fastest above the default", bestBytes, defBytes, fastBytes)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--hot-level", "max"}, `invalid argument "max" for "--hot-level" flag: zstd level "max": want one of fastest, default, better, best`},
		{[]string{"--hot-level", ""}, `zstd level "": want one of`},
		{[]string{"--hot-frame-size", "1K"}, "frame size 1024 not in [64 KiB, 32 MiB]"},
		{[]string{"--hot-frame-size", "64M"}, "frame size 67108864 not in [64 KiB, 32 MiB]"},
		{[]string{"--hot-frame-size", "lots"}, `invalid argument "lots" for "--hot-frame-size" flag`},
	} {
		s := newE2EStore(t)
		res := e2eInvocation{Args: append([]string{"nar", "ingest", "--data", s.dir, ref.Path}, tt.args...)}.run(t)
		if res.Err == nil || !strings.Contains(res.Stderr, tt.want) {
			t.Errorf("nar ingest %s: err %v, stderr %q; want an error containing %q", strings.Join(tt.args, " "), res.Err, res.Stderr, tt.want)
		}
	}
}
