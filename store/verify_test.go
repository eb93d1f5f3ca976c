package store_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// frameFiles lists the frame files of the store in dir.
func frameFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	return files
}

// verifyStore holds three paths: a and b each packed into frames of their
// own, c with its chunk still unpacked.
type verifyStore struct {
	dir     string
	s       *pebblestore.Store
	x       *store.Index
	a, b, c *store.PathInfo
	aFrames []string // the frame files holding a's chunk
}

func newVerifyStore(t *testing.T) *verifyStore {
	t.Helper()
	ctx := context.Background()
	v := &verifyStore{dir: filepath.Join(t.TempDir(), "data")}
	v.reopen(t)
	put := func(path, contents string) *store.PathInfo {
		p := ingestNAR(t, v.s, path, contents)
		if err := v.x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := v.s.Flush(ctx); err != nil { // packs the chunk into a frame
			t.Fatal(err)
		}
		return p
	}
	v.a = put(pathA, strings.Repeat("contents of a ", 100))
	v.aFrames = frameFiles(t, v.dir)
	if len(v.aFrames) == 0 {
		t.Fatal("no frame files after Flush")
	}
	v.b = put(pathB, strings.Repeat("contents of b ", 100))
	if n := len(frameFiles(t, v.dir)); n <= len(v.aFrames) {
		t.Fatalf("%d frame files after b, %d after a: want b in a frame of its own", n, len(v.aFrames))
	}
	v.c = ingestNAR(t, v.s, "1c6kzph7l0dcbfmjap64f0czdafn3b7x-c", strings.Repeat("contents of c ", 100))
	if err := v.x.Put(ctx, v.c); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *verifyStore) reopen(t *testing.T) {
	t.Helper()
	if v.s != nil {
		v.s.Close()
	}
	s, err := pebblestore.Open(v.dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	v.s, v.x = s, store.NewIndex(s, s)
}

func verify(t *testing.T, x *store.Index, o store.VerifyOptions) store.VerifyReport {
	t.Helper()
	rep, err := x.Verify(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestVerifyClean(t *testing.T) {
	v := newVerifyStore(t)
	for _, read := range []bool{false, true} {
		var phases []string
		rep := verify(t, v.x, store.VerifyOptions{ReadData: read, Progress: func(phase string, done, total int64) {
			if done > total {
				t.Errorf("progress %s: %d of %d", phase, done, total)
			}
			if !slices.Contains(phases, phase) {
				phases = append(phases, phase)
			}
		}})
		if !rep.OK() || rep.Paths != 3 {
			t.Fatalf("read data %v: %+v; want 3 paths, no problems", read, rep)
		}
		if read && (rep.Chunks != 3 || !slices.Equal(phases, []string{"paths", "chunks"})) {
			t.Errorf("read data: %d chunks, phases %v; want 3, paths then chunks", rep.Chunks, phases)
		}
	}
}

// TestVerifyDeletedChunk: a chunk gone makes its path incomplete, found
// without reading data; repair deletes exactly that path.
func TestVerifyDeletedChunk(t *testing.T) {
	ctx := context.Background()
	v := newVerifyStore(t)
	if ok, err := v.s.DeleteChunk(ctx, v.c.Root.Digest); err != nil || !ok {
		t.Fatalf("DeleteChunk: %v, %v", ok, err)
	}
	for _, read := range []bool{false, true} {
		rep := verify(t, v.x, store.VerifyOptions{ReadData: read})
		if rep.OK() || !slices.Equal(rep.Broken, []string{v.c.Path}) {
			t.Fatalf("read data %v: %+v; want %s broken", read, rep, v.c.Path)
		}
		p := rep.Problems[len(rep.Problems)-1]
		if p.What != store.ProblemIncomplete || !strings.Contains(p.Detail, v.c.Root.Digest.String()) {
			t.Errorf("problem %+v: want incomplete, naming chunk %s", p, v.c.Root.Digest)
		}
	}
	rep := verify(t, v.x, store.VerifyOptions{Repair: true})
	if !slices.Equal(rep.Removed, []string{v.c.Path}) {
		t.Fatalf("repair removed %v; want %s", rep.Removed, v.c.Path)
	}
	if _, err := v.x.Get(ctx, v.c.Digest()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of the repaired path: %v", err)
	}
	if rep := verify(t, v.x, store.VerifyOptions{ReadData: true}); !rep.OK() || rep.Paths != 2 {
		t.Errorf("verify after repair: %+v; want 2 paths, clean", rep)
	}
}

// TestVerifyCorruptFrame: a flipped byte in a frame file is found only by
// reading data, names the frame, and repair deletes exactly the path whose
// data was there, and the corrupt chunk, so that a second verify is clean
// and the path can be uploaded again.
func TestVerifyCorruptFrame(t *testing.T) {
	ctx := context.Background()
	v := newVerifyStore(t)
	v.s.Close()
	for _, f := range v.aFrames {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v.reopen(t)
	if rep := verify(t, v.x, store.VerifyOptions{}); !rep.OK() {
		t.Fatalf("verify without reading data: %+v; want clean (every piece is there)", rep)
	}
	rep := verify(t, v.x, store.VerifyOptions{ReadData: true})
	if rep.OK() || !slices.Equal(rep.Broken, []string{v.a.Path}) {
		t.Fatalf("%+v; want %s broken", rep, v.a.Path)
	}
	frame := filepath.Base(v.aFrames[0])
	if len(rep.Problems) != 2 {
		t.Fatalf("problems %+v; want one for the path, one for its chunk", rep.Problems)
	}
	if p := rep.Problems[0]; p.Path != v.a.Path || p.What != store.ProblemCorrupt || !strings.Contains(p.Detail, frame) {
		t.Errorf("path problem %+v: want %s corrupt, naming frame %s", p, v.a.Path, frame)
	}
	if p := rep.Problems[1]; p.Digest != v.a.Root.Digest.String() || p.What != store.ProblemCorrupt || !strings.Contains(p.Detail, frame) {
		t.Errorf("chunk problem %+v: want chunk %s corrupt, naming frame %s", p, v.a.Root.Digest, frame)
	}
	rep = verify(t, v.x, store.VerifyOptions{ReadData: true, Repair: true})
	if !slices.Equal(rep.Removed, []string{v.a.Path}) || rep.RemovedChunks != 1 {
		t.Fatalf("repair removed %v and %d chunks; want %s and 1", rep.Removed, rep.RemovedChunks, v.a.Path)
	}
	if rep := verify(t, v.x, store.VerifyOptions{ReadData: true}); !rep.OK() || rep.Paths != 2 {
		t.Fatalf("verify after repair: %+v; want 2 paths, clean", rep)
	}
	// Stored again, the path is whole.
	a := ingestNAR(t, v.s, pathA, strings.Repeat("contents of a ", 100))
	if err := v.x.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	if rep := verify(t, v.x, store.VerifyOptions{ReadData: true}); !rep.OK() || rep.Paths != 3 {
		t.Fatalf("verify after storing it again: %+v; want 3 paths, clean", rep)
	}
}

// TestVerifyNARMismatch: a PathInfo whose NAR hash or size disagrees with
// its tree is found by rendering only, and repair removes it alone.
func TestVerifyNARMismatch(t *testing.T) {
	ctx := context.Background()
	v := newVerifyStore(t)
	a, c := *v.a, *v.c
	a.NARSha256[0] ^= 1
	c.NARSize += 8
	for _, p := range []*store.PathInfo{&a, &c} {
		if err := v.x.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if rep := verify(t, v.x, store.VerifyOptions{}); !rep.OK() {
		t.Fatalf("verify without reading data: %+v; want clean", rep)
	}
	rep := verify(t, v.x, store.VerifyOptions{ReadData: true, Repair: true})
	var whats []string
	for _, p := range rep.Problems {
		whats = append(whats, p.Path+" "+p.What)
	}
	want := []string{a.Path + " " + store.ProblemNARHash, c.Path + " " + store.ProblemNARSize}
	if !slices.Equal(whats, want) || !slices.Equal(rep.Removed, []string{a.Path, c.Path}) {
		t.Fatalf("problems %v, removed %v; want %v, both removed", whats, rep.Removed, want)
	}
	if rep := verify(t, v.x, store.VerifyOptions{ReadData: true}); !rep.OK() || rep.Paths != 1 {
		t.Fatalf("after repair: %+v", rep)
	}
}

// TestVerifyUnreferencedChunk: a damaged chunk no path reaches is found by
// the second pass, breaks no path, and repair deletes it.
func TestVerifyUnreferencedChunk(t *testing.T) {
	ctx := context.Background()
	v := newVerifyStore(t)
	if err := v.s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := frameFiles(t, v.dir)
	orphan := castore.NewChunk([]byte(strings.Repeat("a chunk of no path ", 200)))
	if _, err := v.s.PutChunk(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if err := v.s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, f := range frameFiles(t, v.dir) {
		if !slices.Contains(before, f) {
			added = append(added, f)
		}
	}
	if len(added) != 1 {
		t.Fatalf("%d frame files for the orphan chunk; want 1", len(added))
	}
	v.s.Close()
	b, err := os.ReadFile(added[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(added[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	v.reopen(t)
	rep := verify(t, v.x, store.VerifyOptions{ReadData: true, Repair: true})
	if len(rep.Problems) != 1 || rep.Problems[0].Digest != orphan.Digest().String() || len(rep.Broken) != 0 || rep.RemovedChunks != 1 {
		t.Fatalf("%+v; want the orphan chunk alone found and removed", rep)
	}
	if rep := verify(t, v.x, store.VerifyOptions{ReadData: true}); !rep.OK() || rep.Paths != 3 || rep.Chunks != 3 {
		t.Fatalf("after repair: %+v; want clean, 3 paths, 3 chunks", rep)
	}
}
