package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/testpg"
)

// failingPuts is an ObjectStore whose puts fail after the first n.
type failingPuts struct {
	pebblestore.ObjectStore
	n    int64
	puts atomic.Int64
}

var errInjected = errors.New("injected put failure")

func (f *failingPuts) PutObject(ctx context.Context, name string, data []byte) error {
	if f.puts.Add(1) > f.n {
		return errInjected
	}
	return f.ObjectStore.PutObject(ctx, name, data)
}

// copySource returns a closed store in dir with chunks in frames and
// chunks still queued inline, a blob and a record of the layer above.
func copySource(t *testing.T, dir string) ([]castore.Digest, [][]byte) {
	t.Helper()
	s, err := pebblestore.Open(dir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	chunks := versionedChunks(0, 40)
	ds := putAll(t, s, chunks)
	if err := s.PackPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	more := versionedChunks(1, 2) // less than a frame: stays queued
	ds = append(ds, putAll(t, s, more)...)
	castoretest.MustPutBlob(t, s, bytes.Repeat([]byte("blob "), 3000), 4096)
	if err := s.SetMeta(context.Background(), castore.MetaRecord{Kind: 'p', Key: []byte("path"), Value: []byte("info")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return ds, append(chunks, more...)
}

// TestCopyStoreResume: a copy into PostgreSQL whose object store fails
// after three frames leaves a target marked incomplete; run again, it
// resumes (skipping the three frames), and the target has the source's
// Stats, chunks, blobs and records. Its queued chunks pack, and new
// chunks take queue numbers that do not collide with the copied ones.
func TestCopyStoreResume(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	ds, chunks := copySource(t, srcDir)
	src, err := pebblestore.OpenReadOnly(srcDir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := castoretest.MustStats(t, src)
	if want.Frames < 4 {
		t.Fatalf("the source has %d frames; the test wants more than 3", want.Frames)
	}

	url, dstDir := testpg.New(t), t.TempDir()
	off := framedOptions
	off.Frames.Off, off.CopyTarget = true, true
	failing := off
	failing.Objects = &failingPuts{ObjectStore: pebblestore.NewDirObjects(filepath.Join(dstDir, "frames")), n: 3}
	dst := openPostgres(t, url, dstDir, failing)
	_, err = pebblestore.CopyStore(ctx, dst, src, pebblestore.CopyOptions{Parallel: 1})
	if !errors.Is(err, errInjected) {
		t.Fatalf("copy with failing puts: %v, want the injected failure", err)
	}
	if err := dst.CheckComplete(ctx); !errors.Is(err, castore.ErrInvalid) {
		t.Fatalf("CheckComplete of the interrupted copy: %v, want ErrInvalid", err)
	}
	dst.Close()

	dst = openPostgres(t, url, dstDir, off)
	res, err := pebblestore.CopyStore(ctx, dst, src, pebblestore.CopyOptions{BatchBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Resumed || res.FramesSkipped != 3 || res.Frames != int64(want.Frames)-3 {
		t.Errorf("resumed copy: %+v, want resumed with 3 frames skipped and %d copied", res, want.Frames-3)
	}
	if err := dst.CheckComplete(ctx); err != nil {
		t.Fatal(err)
	}
	if got := castoretest.MustStats(t, dst); got != want {
		t.Fatalf("target stats %+v, want %+v", got, want)
	}
	checkAll(t, dst, ds, chunks)
	if v, err := dst.GetMeta(ctx, 'p', []byte("path")); err != nil || string(v) != "info" {
		t.Errorf("record of the layer above: %q, %v", v, err)
	}
	dst.Close()

	// Opened as a server would: the queued chunks pack, and new ones
	// queue beside them (50 of them take sequence numbers past the
	// source's), so that in the end every chunk is in a frame.
	dst = openPostgres(t, url, dstDir, framedOptions)
	added := versionedChunks(2, 50)
	ds = append(ds, putAll(t, dst, added)...)
	chunks = append(chunks, added...)
	if err := dst.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	checkAll(t, dst, ds, chunks)
	checkStoredBytes(t, dst)
}

// TestCopyStoreRefuses: a target that holds anything, and a source that
// is itself an incomplete copy, are refused with ErrInvalid, and the
// target is left as it was.
func TestCopyStoreRefuses(t *testing.T) {
	ctx := context.Background()
	srcDir := t.TempDir()
	copySource(t, srcDir)
	src, err := pebblestore.OpenReadOnly(srcDir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	for i, fill := range []func(s *pebblestore.Store){
		func(s *pebblestore.Store) { castoretest.MustPutChunk(t, s, []byte("one chunk")) },
		func(s *pebblestore.Store) {
			if err := s.SetMeta(ctx, castore.MetaRecord{Kind: 'p', Key: []byte("x"), Value: []byte("y")}); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			dst := openFramed(t, t.TempDir())
			fill(dst)
			before := castoretest.MustStats(t, dst)
			_, err := pebblestore.CopyStore(ctx, dst, src, pebblestore.CopyOptions{})
			if !errors.Is(err, castore.ErrInvalid) {
				t.Fatalf("copy into a store that is not empty: %v, want ErrInvalid", err)
			}
			if err := dst.CheckComplete(ctx); err != nil {
				t.Errorf("a refused copy marked the target: %v", err)
			}
			if after := castoretest.MustStats(t, dst); after != before {
				t.Errorf("a refused copy changed the target's stats from %+v to %+v", before, after)
			}
		})
	}

	// An incomplete copy as the source.
	mid := t.TempDir()
	midOpts := framedOptions
	midOpts.Frames.Off = true
	midOpts.Objects = &failingPuts{ObjectStore: pebblestore.NewDirObjects(filepath.Join(mid, "frames"))}
	m, err := pebblestore.Open(mid, midOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pebblestore.CopyStore(ctx, m, src, pebblestore.CopyOptions{}); !errors.Is(err, errInjected) {
		t.Fatalf("copy with failing puts: %v", err)
	}
	if _, err := pebblestore.CopyStore(ctx, openFramed(t, t.TempDir()), m, pebblestore.CopyOptions{}); !errors.Is(err, castore.ErrInvalid) {
		t.Errorf("copy from an incomplete copy: %v, want ErrInvalid", err)
	}
	m.Close()
	// Opened again: refused, except as a copy's target.
	if s, err := pebblestore.Open(mid, midOpts); !errors.Is(err, castore.ErrInvalid) {
		if err == nil {
			s.Close()
		}
		t.Errorf("opening an incomplete copy: %v, want ErrInvalid", err)
	}
	midOpts.CopyTarget = true
	m, err = pebblestore.Open(mid, midOpts)
	if err != nil {
		t.Fatalf("opening an incomplete copy as a copy's target: %v", err)
	}
	m.Close()
}
