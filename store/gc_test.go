package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// gcTree is a package-like tree: files shared by every tree with the same
// shared seed, and files of its own.
func gcTree(shared, own uint64) *testtree.Node {
	return testtree.Dir(testtree.Entries{
		"lib": testtree.Dir(testtree.Entries{
			"libshared.so": testtree.File(testtree.Random(shared, 700<<10)),
			"small":        testtree.File(testtree.Text(fmt.Sprintf("shared %d\n", shared))),
		}),
		"bin": testtree.Dir(testtree.Entries{
			"tool": testtree.Exec(testtree.Random(own, 2<<20)),
			"conf": testtree.File(testtree.Text(fmt.Sprintf("own %d\n", own))),
			"sub":  testtree.Dir(testtree.Entries{"x": testtree.File(testtree.Random(own+1, 20<<10))}),
		}),
		"link": testtree.Link("bin/tool"),
	})
}

// gcPath ingests tree as store path name ("<32 chars>-<name>") and
// returns its PathInfo (not yet recorded).
func gcPath(t testing.TB, s castore.Store, name string, tree *testtree.Node) *store.PathInfo {
	t.Helper()
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, tree); err != nil {
		t.Fatal(err)
	}
	res, err := narrender.Ingest(context.Background(), &nar, s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := res.Root
	root.Name = name
	return &store.PathInfo{Path: name, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
}

// checkRenders renders p and compares its hash and size with the NAR's.
func checkRenders(t testing.TB, s castore.Store, p *store.PathInfo) {
	t.Helper()
	h := sha256.New()
	root := p.Root
	root.Name = ""
	if err := narrender.Render(context.Background(), h, s, root); err != nil {
		t.Fatalf("render %s: %v", p.Path, err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, p.NARSha256[:]) {
		t.Fatalf("render %s: sha256 %x, want %x", p.Path, got, p.NARSha256)
	}
}

// chunkSet lists the chunks of s.
func chunkSet(t testing.TB, s *pebblestore.Store) map[castore.Digest]int {
	t.Helper()
	out := map[castore.Digest]int{}
	if err := s.ScanChunks(context.Background(), func(d castore.Digest, size int) error {
		out[d] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkCounters compares Stats with a fresh count.
func checkCounters(t testing.TB, s *pebblestore.Store) castore.Stats {
	t.Helper()
	ctx := context.Background()
	// At rest: the packer would otherwise register frames between the
	// two counts.
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
	return st
}

func openGCStore(t testing.TB, dir string) (*pebblestore.Store, *store.Index) {
	t.Helper()
	return openGCStoreWith(t, dir, pebblestore.Options{RecordUses: true})
}

func openGCStoreWith(t testing.TB, dir string, opts pebblestore.Options) (*pebblestore.Store, *store.Index) {
	t.Helper()
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, store.NewIndex(s, s)
}

const (
	gcPathA = "0c6kzph7l0dcbfmjap64f0czdafn3b7x-a"
	gcPathB = "1c6kzph7l0dcbfmjap64f0czdafn3b7x-b"
)

// TestGCFreesWhatOnlyDeletedPathsUsed: A and B share files; after A is
// deleted and a collection runs, the store holds exactly B's chunks, blob
// indexes and directories (a store of B alone is the reference), its
// counters agree with a fresh count, its stored bytes are within the
// rewrite threshold of B's alone, and B renders byte for byte. A dry run
// before it counts the same and changes nothing.
func TestGCFreesWhatOnlyDeletedPathsUsed(t *testing.T) {
	// With 1 MiB frames, where the packer cuts them depends on the
	// order chunks were queued in, so which frames fall below a threshold
	// varies from run to run; the checks hold for any cut. With frames
	// large enough for both paths, A and B share one frame, about 57%
	// live once A is gone: rewritten at 0.9, kept at 0.5.
	for _, c := range []struct {
		threshold float64
		frameSize int
		rewrites  int // -1: any number
	}{
		{0, 1 << 20, 0},
		{0.5, 1 << 20, -1},
		{0.9, 1 << 20, -1},
		{0.5, 32 << 20, 0},
		{0.9, 32 << 20, 1},
	} {
		t.Run(fmt.Sprintf("%g-%d", c.threshold, c.frameSize), func(t *testing.T) {
			res := gcDeleteA(t, c.threshold, c.frameSize)
			if c.rewrites >= 0 && res.FramesRewritten != c.rewrites {
				t.Errorf("%d frames rewritten, want %d", res.FramesRewritten, c.rewrites)
			}
		})
	}
}

func gcDeleteA(t *testing.T, threshold float64, frameSize int) store.GCResult {
	ctx := context.Background()
	opts := pebblestore.Options{RecordUses: true, Frames: pebblestore.FrameOptions{Size: frameSize}}
	onlyB, xb := openGCStoreWith(t, filepath.Join(t.TempDir(), "b"), opts)
	if err := xb.Put(ctx, gcPath(t, onlyB, gcPathB, gcTree(1, 20))); err != nil {
		t.Fatal(err)
	}
	if err := onlyB.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantChunks := chunkSet(t, onlyB)
	wantStats := checkCounters(t, onlyB)

	s, x := openGCStoreWith(t, filepath.Join(t.TempDir(), "ab"), opts)
	a := gcPath(t, s, gcPathA, gcTree(1, 10))
	b := gcPath(t, s, gcPathB, gcTree(1, 20))
	for _, p := range []*store.PathInfo{a, b} {
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := checkCounters(t, s)
	if ok, err := x.Delete(ctx, a.Digest()); err != nil || !ok {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	// Grace 0: the puts above are not protected.
	gopts := pebblestore.GCOptions{RewriteBelow: threshold}

	gopts.DryRun = true
	dry, err := x.GC(ctx, s, gopts)
	if err != nil {
		t.Fatal(err)
	}
	if after := checkCounters(t, s); after != before {
		t.Fatalf("dry run changed the counters: %+v, before %+v", after, before)
	}
	if got := chunkSet(t, s); len(got) != int(before.Chunks) {
		t.Fatalf("dry run: %d chunks, before %d", len(got), before.Chunks)
	}

	gopts.DryRun = false
	res, err := x.GC(ctx, s, gopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dry run %+v", dry)
	t.Logf("gc %+v", res)
	if res.PathsLive != 1 {
		t.Errorf("pathsLive %d, want 1", res.PathsLive)
	}
	got := chunkSet(t, s)
	if len(got) != len(wantChunks) {
		t.Errorf("%d chunks after gc, B alone has %d", len(got), len(wantChunks))
	}
	for d := range wantChunks {
		if _, ok := got[d]; !ok {
			t.Errorf("chunk %s of B was deleted", d)
		}
	}
	after := checkCounters(t, s)
	if after.Chunks != wantStats.Chunks || after.UniqueChunkBytes != wantStats.UniqueChunkBytes ||
		after.Blobs != wantStats.Blobs || after.Directories != wantStats.Directories {
		t.Errorf("after gc %+v, B alone %+v", after, wantStats)
	}
	if threshold > 0 && float64(after.StoredBytes) > float64(wantStats.StoredBytes)/threshold {
		t.Errorf("stored bytes %d after gc, more than B's %d / %g", after.StoredBytes, wantStats.StoredBytes, gopts.RewriteBelow)
	}
	if uint64(res.ChunksDeleted) != before.Chunks-after.Chunks || res.ChunkBytesFreed != before.UniqueChunkBytes-after.UniqueChunkBytes ||
		uint64(res.BlobsDeleted) != before.Blobs-after.Blobs || uint64(res.DirectoriesDeleted) != before.Directories-after.Directories {
		t.Errorf("result %+v disagrees with stats before %+v and after %+v", res.GCResult, before, after)
	}
	if res.StoredBytesFreed != int64(before.StoredBytes)-int64(after.StoredBytes) {
		t.Errorf("storedBytesFreed %d, stats fell by %d", res.StoredBytesFreed, int64(before.StoredBytes)-int64(after.StoredBytes))
	}
	// With 1 MiB frames, some hold A's own chunks alone.
	if frameSize == 1<<20 && (res.FramesDeleted == 0 || res.StoredBytesFreed <= 0) {
		t.Errorf("no frame deleted: %+v", res.GCResult)
	}
	if dry.ChunksDeleted != res.ChunksDeleted || dry.BlobsDeleted != res.BlobsDeleted || dry.DirectoriesDeleted != res.DirectoriesDeleted ||
		dry.ChunkBytesFreed != res.ChunkBytesFreed || dry.FramesDeleted != res.FramesDeleted || dry.FramesRewritten != res.FramesRewritten {
		t.Errorf("dry run said %+v, the collection did %+v", dry.GCResult, res.GCResult)
	}
	checkRenders(t, s, b)

	// A second collection finds nothing (every frame left is at least
	// the threshold live), and A can be stored again.
	again, err := x.GC(ctx, s, gopts)
	if err != nil || again.ChunksDeleted+again.BlobsDeleted+again.DirectoriesDeleted != 0 || again.FramesDeleted+again.FramesRewritten != 0 {
		t.Errorf("second gc: %+v, %v", again.GCResult, err)
	}
	if threshold > 0 && float64(after.UniqueChunkBytes) < threshold*float64(after.UniqueChunkBytes+again.DeadBytesLeft) {
		t.Errorf("%d live bytes and %d dead ones left in frames: below the threshold %g", after.UniqueChunkBytes, again.DeadBytesLeft, threshold)
	}
	a = gcPath(t, s, gcPathA, gcTree(1, 10))
	if err := x.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	checkRenders(t, s, a)
	checkCounters(t, s)
	return res
}

// TestGCGrace: what was stored within the grace period stays, although no
// path reaches it; with no grace it goes.
func TestGCGrace(t *testing.T) {
	ctx := context.Background()
	s, x := openGCStore(t, filepath.Join(t.TempDir(), "data"))
	orphan := gcPath(t, s, gcPathA, gcTree(3, 30)) // never recorded
	for _, c := range []struct {
		grace time.Duration
		kept  bool
	}{{time.Hour, true}, {0, false}} {
		res, err := x.GC(ctx, s, pebblestore.GCOptions{Grace: c.grace, RewriteBelow: 0.5})
		if err != nil {
			t.Fatal(err)
		}
		st := checkCounters(t, s)
		if kept := st.Chunks > 0 && st.Directories > 0; kept != c.kept {
			t.Fatalf("grace %s: %+v after gc %+v; kept %v, want %v", c.grace, st, res.GCResult, kept, c.kept)
		}
		if c.kept {
			checkRenders(t, s, orphan)
		}
	}
}

// TestGCRacingPushes: eight writers ingest overlapping trees and record
// them while collections run back to back, with no grace period, so that
// only the collection's epoch protects what they write; others delete
// paths meanwhile. Every put that succeeded renders byte for byte at the
// end, and the counters agree with a fresh count. A put may fail
// with ErrIncomplete when a collection deleted what it ingested before
// that collection started (what the grace period is for); it is retried.
func TestGCRacingPushes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, x := openGCStore(t, filepath.Join(t.TempDir(), "data"))
	const writers, rounds = 8, 6
	var (
		mu   sync.Mutex
		live []*store.PathInfo
	)
	stop := make(chan struct{})
	gcDone := make(chan error, 1)
	var runs int
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			if _, err := x.GC(ctx, s, pebblestore.GCOptions{RewriteBelow: 0.5}); err != nil {
				gcDone <- err
				return
			}
			runs++
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				name := fmt.Sprintf("%02d%02dzph7l0dcbfmjap64f0czdafn3b7x-w%d-r%d", w, r, w, r)
				tree := gcTree(uint64(r%3), uint64(100+(w+r)%5)) // overlapping
				var p *store.PathInfo
				var err error
				for try := 0; try < 20; try++ {
					p = gcPath(t, s, name, tree)
					if err = x.Put(ctx, p); !errors.Is(err, store.ErrIncomplete) {
						break
					}
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, r, err)
					return
				}
				mu.Lock()
				live = append(live, p)
				// Delete an earlier path now and then, to make garbage.
				if len(live) > 4 && r%2 == 1 {
					old := live[0]
					live = live[1:]
					mu.Unlock()
					if _, err := x.Delete(ctx, old.Digest()); err != nil {
						errs <- err
						return
					}
				} else {
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d collections ran during %d puts", runs, writers*rounds)
	if runs == 0 {
		t.Fatal("no collection ran during the puts")
	}
	for _, p := range live {
		checkRenders(t, s, p)
	}
	// One more collection at rest, then everything still renders.
	if _, err := x.GC(ctx, s, pebblestore.GCOptions{RewriteBelow: 0.5}); err != nil {
		t.Fatal(err)
	}
	for _, p := range live {
		checkRenders(t, s, p)
	}
	checkCounters(t, s)
}

// TestGCCloseDuringCollection: closing the store while a collection lists
// the live paths waits for the collection, which completes.
func TestGCCloseDuringCollection(t *testing.T) {
	ctx := context.Background()
	s, err := pebblestore.Open(filepath.Join(t.TempDir(), "data"), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x := store.NewIndex(s, s)
	for i, name := range []string{gcPathA, gcPathB} {
		if err := x.Put(ctx, gcPath(t, s, name, gcTree(uint64(i), uint64(10+i)))); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	closed := make(chan error, 1)
	res, err := x.GC(ctx, s, pebblestore.GCOptions{Progress: func(step string, _, _ int64) {
		if step == "marking" {
			// Close from another goroutine while the roots are listed.
			once.Do(func() {
				go func() { closed <- s.Close() }()
				time.Sleep(50 * time.Millisecond)
			})
		}
	}})
	if err != nil || res.PathsLive != 2 {
		t.Fatalf("gc: %+v, %v", res, err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute of the collection")
	}
}

// TestGCDropsNamesOfGoneNARs: a collection drops the recorded names of
// uploaded NAR files whose NAR no path has and no pending upload holds
// (a dry run counts them and drops none), and keeps the others: a live
// path's, a NAR whose upload is pending, and a deleted path's whose NAR
// another path still has.
func TestGCDropsNamesOfGoneNARs(t *testing.T) {
	ctx := context.Background()
	s, x := openGCStore(t, t.TempDir())
	a := gcPath(t, s, gcPathA, gcTree(1, 10))
	b := gcPath(t, s, gcPathB, gcTree(1, 20))
	for _, p := range []*store.PathInfo{a, b} {
		if err := x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pending := sha256.Sum256([]byte("a NAR uploaded, its narinfo not yet"))
	nowhere := sha256.Sum256([]byte("a NAR of no path"))
	names := map[string][sha256.Size]byte{
		"nar/a.nar.xz":       a.NARSha256,
		"nar/b.nar.xz":       b.NARSha256,
		"nar/pending.nar.xz": pending,
		"nar/nowhere.nar.xz": nowhere,
	}
	for url, sum := range names {
		if err := x.PutNARFile(ctx, url, store.NARFile{NARSha256: sum, Compression: "xz"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.PutPendingUpload(ctx, store.PendingUpload{URL: "nar/pending.nar.xz", Root: b.Root, NARSize: b.NARSize, NARSha256: pending, Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := x.Delete(ctx, a.Digest()); err != nil || !ok {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	kept := func() map[string]bool {
		t.Helper()
		got := map[string]bool{}
		for url := range names {
			_, err := x.GetNARFile(ctx, url)
			switch {
			case err == nil:
				got[url] = true
			case !errors.Is(err, store.ErrNotFound):
				t.Fatal(err)
			}
		}
		return got
	}

	res, err := x.GC(ctx, s, pebblestore.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.NARFilesDeleted != 2 || len(kept()) != len(names) {
		t.Errorf("dry run: %d names counted, %d of %d kept; want 2 counted, all kept", res.NARFilesDeleted, len(kept()), len(names))
	}
	if res, err = x.GC(ctx, s, pebblestore.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"nar/b.nar.xz": true, "nar/pending.nar.xz": true}
	if got := kept(); res.NARFilesDeleted != 2 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("collection: %d names dropped, kept %v; want 2 dropped, kept %v", res.NARFilesDeleted, got, want)
	}

	// B's NAR under a second path: deleting B keeps B's name.
	c := *b
	c.Path = "2c6kzph7l0dcbfmjap64f0czdafn3b7x-c"
	c.Root.Name = c.Path
	if err := x.Put(ctx, &c); err != nil {
		t.Fatal(err)
	}
	if ok, err := x.Delete(ctx, b.Digest()); err != nil || !ok {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	if res, err = x.GC(ctx, s, pebblestore.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := kept(); !got["nar/b.nar.xz"] {
		t.Errorf("B deleted, its NAR still C's: B's name dropped (kept %v, %d dropped)", got, res.NARFilesDeleted)
	}
}
