package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// TestMaterializeCancelled: a pull cancelled while its files are being
// handed to the writers leaves no tree at dst, even when every file
// written needed no chunk to wait for (empty files here; files of held
// or cached chunks likewise), so that no writer saw the cancellation.
func TestMaterializeCancelled(t *testing.T) {
	empty := castore.Hash(nil)
	dir := &castore.Directory{}
	for i := range 200 {
		dir.Files = append(dir.Files, castore.FileEntry{Name: fmt.Sprintf("f%03d", i), Digest: empty})
	}
	root := castore.Entry{Kind: castore.KindDirectory, Digest: dir.Digest(), Size: dir.Size()}
	tr := &tree{root: root, dirs: []dirItem{{digest: root.Digest, dir: dir}}, blobs: []blobItem{{digest: empty}}}
	arr := newArrivals(nil)
	arr.planDone()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(t.TempDir(), "out")
	err := (&Client{}).materialize(ctx, tr, dst, arr)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("materialize with its context cancelled: %v, want %v", err, context.Canceled)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after a cancelled materialize: %v, want it absent", dst, err)
	}
	left, err := os.ReadDir(filepath.Dir(dst))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("%d entries left beside %s, want none (the temporary tree removed)", len(left), dst)
	}
}
