package main

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/internal/testtree"
)

// TestHotFrameFlags: --hot-frame-size and --hot-level reach the store a
// write command opens (smaller frames make more of them, the best level
// stores fewer bytes than the fastest, and the NAR renders back either way), and bad values
// are refused with an error naming the flag or the bound.
func TestHotFrameFlags(t *testing.T) {
	t.Parallel()
	ref := e2eDumpTree(t, testtree.Tree{Name: "hot", Root: testtree.Dir(testtree.Entries{
		"a": testtree.File(testtree.Mixed(1, 2560<<10)),
		"b": testtree.File(testtree.Mixed(2, 2560<<10)),
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
	defFrames, _ := framesAndBytes()
	smallFrames, _ := framesAndBytes("--hot-frame-size", "64K")
	t.Logf("default: %d frames; 64 KiB frames: %d", defFrames, smallFrames)
	if defFrames == 0 || smallFrames < 10*defFrames {
		t.Errorf("--hot-frame-size 64K: %d frames, default %d; want at least ten times as many", smallFrames, defFrames)
	}

	// The levels, on 16 MiB of words, which zstd's levels tell apart by
	// more (5 to 6% here) than the bytes left unpacked (less than a 64 KiB
	// frame, lz4) and the order two workers queue chunks in can move
	// (about 40 KB).
	words := wordSalad(3, 16<<20)
	ref = e2eDumpTree(t, testtree.Tree{Name: "words", Root: testtree.Dir(testtree.Entries{
		"w": testtree.File(testtree.Bytes(words)),
	})})
	_, fastBytes := framesAndBytes("--hot-frame-size", "64K", "--hot-level", "fastest")
	_, bestBytes := framesAndBytes("--hot-frame-size", "64K", "--hot-level", "best")
	t.Logf("16 MiB of words in 64 KiB frames: fastest %d bytes, best %d", fastBytes, bestBytes)
	// Ignored levels would leave only that noise between the two.
	if bestBytes > fastBytes-fastBytes*3/100 {
		t.Errorf("stored bytes: --hot-level best %d, fastest %d; want best at least 3%% smaller", bestBytes, fastBytes)
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

// wordSalad returns n bytes of words drawn from a vocabulary of a few
// hundred made-up words, deterministic for a seed.
func wordSalad(seed uint64, n int) []byte {
	rnd := rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
	const letters = "etaoinshrdlucmfwypvbgkjqxz"
	vocab := make([]string, 400)
	for i := range vocab {
		w := make([]byte, 2+rnd.IntN(9))
		for j := range w {
			w[j] = letters[min(rnd.IntN(len(letters)), rnd.IntN(len(letters)))]
		}
		vocab[i] = string(w)
	}
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, vocab[min(rnd.IntN(len(vocab)), rnd.IntN(len(vocab)))]...)
		if rnd.IntN(12) == 0 {
			b = append(b, ".\n"...)
		} else {
			b = append(b, ' ')
		}
	}
	return b[:n]
}
