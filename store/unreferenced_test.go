package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/store"
)

// TestUnreferenced: chunks no PathInfo and no kept file reaches are
// counted, and stop being counted once something refers to them.
func TestUnreferenced(t *testing.T) {
	ctx := context.Background()
	s, x := openStore(t)
	a := ingestNAR(t, s, pathA, "contents of a")
	b := ingestNAR(t, s, pathB, strings.Repeat("contents of b ", 100))
	logInfo := ingestNAR(t, s, pathA, "a build log")

	check := func(what string, chunks, bytes uint64) {
		t.Helper()
		u, err := x.Unreferenced(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if u.Chunks != chunks || u.Bytes != bytes {
			t.Errorf("%s: %d unreferenced chunks of %d bytes, want %d of %d", what, u.Chunks, u.Bytes, chunks, bytes)
		}
	}
	check("nothing recorded", 3, a.Root.Size+b.Root.Size+logInfo.Root.Size)
	if err := x.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	check("a recorded", 2, b.Root.Size+logInfo.Root.Size)
	if err := x.PutFile(ctx, store.FileLog, drv, store.File{ContentType: "text/plain", Blob: logInfo.Root.Digest, Size: logInfo.Root.Size}); err != nil {
		t.Fatal(err)
	}
	check("a and a log recorded", 1, b.Root.Size)
	if err := x.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	check("everything recorded", 0, 0)
}
