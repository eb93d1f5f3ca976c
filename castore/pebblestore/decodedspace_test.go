package pebblestore

import (
	"bytes"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// TestDecodedCacheNoSpace: a decoded frame is not written while the disk
// has no room for it (the store's reserve), and is written once it has.
func TestDecodedCacheNoSpace(t *testing.T) {
	var full atomic.Bool
	full.Store(true)
	admit := func(n int) error {
		if full.Load() {
			return castore.ErrNoSpace
		}
		return nil
	}
	c, err := openDecodedCache(filepath.Join(t.TempDir(), "decoded"), 64<<20, admit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	data := bytes.Repeat([]byte("decoded frame "), 1000)
	name := castore.Hash([]byte("frame"))
	r := frameRef{frame: name, offset: 14, length: 28}
	want := data[14:42]
	waitWritten := func(what string, writes, skipped uint64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			st := c.stats()
			if st.Writes == writes && st.Skipped == skipped {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v; want %d written, %d skipped", what, st, writes, skipped)
			}
		}
	}

	var released atomic.Int32
	release := func() { released.Add(1) }
	c.keep(name, data, release)
	waitWritten("disk full", 0, 1)
	if _, ok := c.read(r, castore.Hash(want), nil); ok || c.stats().Files != 0 {
		t.Fatalf("a decoded frame was kept on a full disk: %+v", c.stats())
	}
	full.Store(false)
	c.keep(name, data, release)
	waitWritten("room again", 1, 1)
	if n := released.Load(); n != 2 {
		t.Fatalf("the frame given to keep was released %d times, want 2 (once for each keep)", n)
	}
	if got, ok := c.read(r, castore.Hash(want), nil); !ok || !bytes.Equal(got, want) {
		t.Fatalf("read from the decoded file: %q, %v; want %q", got, ok, want)
	}
}
