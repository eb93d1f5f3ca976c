package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/client"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// TestPullManyTrees pulls 120 small trees (directories sharing a file,
// plus a tree that is one file and one that is a symlink) in one
// PullMany over real gRPC: every tree comes out byte for byte, each
// distinct chunk is fetched once, and the calls are one directory stream
// per directory tree plus a few for all the chunk lists and chunks, not
// several per tree.
func TestPullManyTrees(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	cache := new(castore.MemoryStore)
	push := dial(t, ts.addr, cache)
	shared := testtree.File(testtree.Random(1, 10<<10))
	var (
		want    []narrender.Result
		targets []client.PullTarget
	)
	out := t.TempDir()
	add := func(n *testtree.Node) {
		res := ingestNode(t, cache, n)
		if _, err := push.PushTree(ctx, res.Root); err != nil {
			t.Fatal(err)
		}
		want = append(want, res)
		targets = append(targets, client.PullTarget{Root: res.Root, Dst: filepath.Join(out, fmt.Sprint(len(targets)))})
	}
	const dirTrees = 120
	for i := range dirTrees {
		add(testtree.Dir(testtree.Entries{
			"bin":    testtree.Dir(testtree.Entries{"tool": testtree.Exec(testtree.Random(uint64(100+i), 10<<10))}),
			"shared": shared,
		}))
	}
	add(testtree.File(testtree.Text("a tree of one file\n")))
	add(testtree.Link("somewhere/else"))

	calls := ts.calls(t)
	st, err := dial(t, ts.addr, new(castore.MemoryStore)).PullMany(ctx, targets)
	if err != nil {
		t.Fatal(err)
	}
	if n := ts.calls(t) - calls; n > dirTrees+6 {
		t.Errorf("pulling %d trees took %d calls, want at most %d", len(targets), n, dirTrees+6)
	}
	// 120 tools, the shared file and the one-file tree.
	if st.ChunksFetched != dirTrees+2 || st.ChunksFromCache != 0 {
		t.Errorf("pull: %+v, want %d chunks fetched", st, dirTrees+2)
	}
	for i, tg := range targets {
		if sum, size := narSum(t, tg.Dst); sum != want[i].NARSha256 || size != want[i].NARSize {
			t.Errorf("tree %d: pulled NAR of %d bytes differs", i, size)
		}
	}
}

// TestPullManyRefuses: a destination that exists or is given twice is
// refused before anything is fetched or written.
func TestPullManyRefuses(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t)
	cache := new(castore.MemoryStore)
	res := ingestNode(t, cache, testtree.Dir(testtree.Entries{"f": testtree.File(testtree.Text("x\n"))}))
	if _, err := dial(t, ts.addr, cache).PushTree(ctx, res.Root); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	exists := filepath.Join(out, "exists")
	if err := os.Mkdir(exists, 0o755); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(out, "fresh")
	c := dial(t, ts.addr, new(castore.MemoryStore))
	for name, targets := range map[string][]client.PullTarget{
		"exists": {{Root: res.Root, Dst: fresh}, {Root: res.Root, Dst: exists}},
		"twice":  {{Root: res.Root, Dst: fresh}, {Root: res.Root, Dst: fresh + "/"}},
	} {
		calls := ts.calls(t)
		if _, err := c.PullMany(ctx, targets); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "twice" && !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
		if n := ts.calls(t) - calls; n != 0 {
			t.Errorf("%s: %d calls made", name, n)
		}
		if _, err := os.Lstat(fresh); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %s written", name, fresh)
		}
	}
}
