package client

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// TestReachableMissing: of the directories the server reported missing,
// a push sends those its root reaches through missing ones only, leaves
// first; one below a directory reported present (stored by another
// client between the server's checks) is left out.
func TestReachableMissing(t *testing.T) {
	// leaf <- mid <- root, and other <- root.
	leaf := &castore.Directory{}
	dig := func(d *castore.Directory) castore.Digest { return castore.Hash(d.Marshal()) }
	mid := &castore.Directory{Directories: []castore.DirectoryEntry{{Name: "leaf", Digest: dig(leaf), Size: 0}}}
	other := &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "s", Target: "t"}}}
	root := &castore.Directory{Directories: []castore.DirectoryEntry{
		{Name: "mid", Digest: dig(mid), Size: 1},
		{Name: "other", Digest: dig(other), Size: 0},
	}}
	dirs := []dirItem{{dig(leaf), leaf}, {dig(mid), mid}, {dig(other), other}, {dig(root), root}}
	for _, tc := range []struct {
		missing, want []int
	}{
		{[]int{0, 1, 2, 3}, []int{0, 1, 2, 3}},
		{[]int{0, 2, 3}, []int{2, 3}}, // mid present: leaf is under it
		{[]int{0, 3}, []int{3}},
		{[]int{3}, []int{3}},
		{[]int{0, 1}, nil}, // root present: nothing to send
		{nil, nil},
	} {
		t.Run(fmt.Sprint(tc.missing), func(t *testing.T) {
			if got := reachableMissing(dirs, tc.missing); !slices.Equal(got, tc.want) {
				t.Errorf("reachableMissing(%v) = %v, want %v", tc.missing, got, tc.want)
			}
		})
	}
}
