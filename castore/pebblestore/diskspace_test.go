package pebblestore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted at
// the end of the test. The tests run as root.
func mountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Fatalf("mounting a tmpfs on %s (the tests need root): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fill allocates a file of n bytes at path.
func fill(t testing.TB, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
		t.Fatalf("allocating %d bytes for %s: %v", n, path, err)
	}
}

func avail(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// randomChunk returns an incompressible chunk of n bytes.
func randomChunk(r *rand.Rand, n int) castore.Chunk {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return castore.NewChunk(b)
}

// smallStoreOptions: 2 MiB memtables, 4 MiB kept free: writes are refused
// below 8 MiB free.
var smallStoreOptions = pebblestore.Options{CacheSize: 4 << 20, MemTableSize: 2 << 20, MinFreeBytes: 4 << 20}

// TestPebbleFullDisk fills a 64 MiB tmpfs: the store refuses writes with
// ErrNoSpace, naming the directory and the free space, before Pebble meets
// ENOSPC; reads go on; once a filler file is deleted, writes succeed again
// without reopening, and everything reads back after a reopen.
func TestPebbleFullDisk(t *testing.T) {
	ctx := context.Background()
	mnt := mountTmpfs(t, 64<<20)
	fill(t, filepath.Join(mnt, "filler"), 24<<20)
	dir := filepath.Join(mnt, "store")
	// Frames off: packing frees the space of inline chunks as it goes,
	// which would make the point of refusal move. 4 MiB memtables (writes
	// refused below 12 MiB free): with 2 MiB ones the 25 MiB written went
	// to a dozen blob files, more than an sstable may refer to
	// (MaxBlobReferenceDepth), and a compaction then copied their values
	// into new blob files in the background, at times until the disk was
	// full, which no check before a write can foresee.
	opts := smallStoreOptions
	opts.Frames.Off = true
	opts.MemTableSize = 4 << 20
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	r := rand.New(rand.NewPCG(1, 2))
	var stored []castore.Chunk
	var refusal error
	for range 1024 { // 64 MiB at most: more than the tmpfs holds
		c := randomChunk(r, 64<<10)
		if _, err := s.PutChunk(ctx, c); err != nil {
			refusal = err
			break
		}
		stored = append(stored, c)
	}
	if !errors.Is(refusal, castore.ErrNoSpace) {
		t.Fatalf("after %d chunks, PutChunk = %v, want ErrNoSpace", len(stored), refusal)
	}
	for _, want := range []string{dir, "MiB free", "reserve"} {
		if !strings.Contains(refusal.Error(), want) {
			t.Errorf("error %q does not name %q", refusal, want)
		}
	}
	if free := avail(t, mnt); free < 2<<20 {
		t.Errorf("the store wrote until %d bytes were left: the guard should stop it with 12 MiB free", free)
	}
	t.Logf("refused after %d chunks: %v", len(stored), refusal)
	if len(stored) < 64 {
		t.Fatalf("only %d chunks went in before the refusal", len(stored))
	}

	// Other writes are refused too; reads go on.
	if _, err := s.PutDirectory(ctx, &castore.Directory{Symlinks: []castore.SymlinkEntry{{Name: "a", Target: "b"}}}); !errors.Is(err, castore.ErrNoSpace) {
		t.Errorf("PutDirectory on a full disk = %v, want ErrNoSpace", err)
	}
	checkChunks(t, s, stored)

	// Space freed: writes resume, same store.
	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	for range 16 {
		c := randomChunk(r, 64<<10)
		if _, err := s.PutChunk(ctx, c); err != nil {
			t.Fatalf("PutChunk after freeing space: %v", err)
		}
		stored = append(stored, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkChunks(t, s, stored)
	if st, err := s.Stats(ctx); err != nil || st.Chunks != uint64(len(stored)) {
		t.Errorf("Stats = %+v, %v; want %d chunks", st, err, len(stored))
	}
}

func checkChunks(t *testing.T, s castore.ChunkStore, chunks []castore.Chunk) {
	t.Helper()
	for _, c := range chunks {
		got, err := s.GetChunk(context.Background(), c.Digest(), nil)
		if err != nil {
			t.Fatalf("GetChunk %s: %v", c.Digest(), err)
		}
		if !bytes.Equal(got, c.Data()) {
			t.Fatalf("GetChunk %s: wrong bytes", c.Digest())
		}
	}
}

// TestPebbleOpenFullDisk: a writable open is refused while the disk is
// nearly full (Pebble would flush the write-ahead log for ever); a
// read-only open works.
func TestPebbleOpenFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, 32<<20)
	dir := filepath.Join(mnt, "store")
	s, err := pebblestore.Open(dir, smallStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	c := randomChunk(rand.New(rand.NewPCG(3, 4)), 100<<10)
	if _, err := s.PutChunk(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fill(t, filepath.Join(mnt, "filler"), avail(t, mnt)-(1<<20))
	if _, err := pebblestore.Open(dir, smallStoreOptions); !errors.Is(err, castore.ErrNoSpace) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open on a full disk = %v, want ErrNoSpace naming %s", err, dir)
	}
	ro, err := pebblestore.OpenReadOnly(dir, smallStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	checkChunks(t, ro, []castore.Chunk{c})
}

// TestPebbleWriteWaitsForSpace: without the guard, a write that meets a
// full disk waits (rather than Pebble panicking) and completes once space
// is freed.
//
// The filler leaves 24 MiB and frees 104: the store may take several times
// the 30 MiB written (write-ahead logs, inline values in blob files not
// yet compacted away, frames), more than 64 MiB when compactions lag on a
// loaded machine, and a write-ahead log that meets a full disk waits for
// ever, Close included.
func TestPebbleWriteWaitsForSpace(t *testing.T) {
	ctx := context.Background()
	mnt := mountTmpfs(t, 128<<20)
	filler := filepath.Join(mnt, "filler")
	fill(t, filler, 104<<20)
	opts := smallStoreOptions
	opts.NoSpaceGuard = true
	s, err := pebblestore.Open(filepath.Join(mnt, "store"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Run before Close when the test fails with the disk full.
	defer os.Remove(filler)

	r := rand.New(rand.NewPCG(5, 6))
	var chunks []castore.Chunk
	for range 480 { // 30 MiB, more than the 24 MiB left
		chunks = append(chunks, randomChunk(r, 64<<10))
	}
	done := make(chan error, 1)
	go func() {
		for _, c := range chunks {
			if _, err := s.PutChunk(ctx, c); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	// Wait for the disk to fill up with the puts still going.
	deadline := time.After(2 * time.Minute)
	for avail(t, mnt) > 256<<10 {
		select {
		case err := <-done:
			t.Fatalf("the puts ended (%v) before the disk was full", err)
		case <-deadline:
			t.Fatalf("the disk never filled up: %d bytes free", avail(t, mnt))
		case <-time.After(20 * time.Millisecond):
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the puts ended (%v) on a full disk, want them to wait", err)
	default:
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("PutChunk once space was freed: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the puts did not resume once space was freed")
	}
	checkChunks(t, s, chunks)
}

// fileState is what a test remembers of a file to see whether it changed.
type fileState struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	sum   [32]byte
}

// snapshotDir returns the state of every file under dir, dir included.
func snapshotDir(t testing.TB, dir string) map[string]fileState {
	t.Helper()
	m := make(map[string]fileState)
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		st := fileState{mode: info.Mode(), size: info.Size(), mtime: info.ModTime()}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			st.sum = sha256.Sum256(b)
		}
		m[path] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameSnapshot(t testing.TB, before, after map[string]fileState) {
	t.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			t.Errorf("%s was removed", p)
		case a != b:
			t.Errorf("%s changed: %+v, was %+v", p, a, b)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s was created", p)
		}
	}
}

// copyDir copies the regular files of src into a new directory dst.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			copyDir(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPebbleReadOnly: a read-only open refuses a missing directory, a file
// and a directory without a database, creating nothing; on a store it
// reads everything, replays an unflushed write-ahead log in memory, refuses
// writes and changes no file. Two read-only opens may coexist.
func TestPebbleReadOnly(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	notDir := filepath.Join(base, "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(base, "empty")
	other := filepath.Join(base, "other")
	for _, d := range []string{empty, other} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("not a store"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
	}{
		{"missing directory", filepath.Join(base, "typo")},
		{"missing parent", filepath.Join(base, "typo", "store")},
		{"a file", notDir},
		{"empty directory", empty},
		{"directory without a database", other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotDir(t, base)
			s, err := pebblestore.OpenReadOnly(tc.dir, pebblestore.Options{})
			if err == nil {
				s.Close()
				t.Fatalf("OpenReadOnly(%s) succeeded", tc.dir)
			}
			if !strings.Contains(err.Error(), tc.dir) || !strings.Contains(err.Error(), "no store") {
				t.Errorf("error %q does not say there is no store at %s", err, tc.dir)
			}
			sameSnapshot(t, before, snapshotDir(t, base))
		})
	}

	// A store with data in sstables, and a crash image of it with more
	// data only in its write-ahead log.
	dir := filepath.Join(base, "store")
	s, err := pebblestore.Open(dir, testPebbleOptions)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	var chunks []castore.Chunk
	for range 20 {
		c := randomChunk(r, 20<<10)
		if _, err := s.PutChunk(ctx, c); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	unflushed := randomChunk(r, 30<<10)
	if _, err := s.PutChunk(ctx, unflushed); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(base, "crashed")
	copyDir(t, dir, crashed)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	chunks = append(chunks, unflushed)

	for _, d := range []string{dir, crashed} {
		t.Run(filepath.Base(d), func(t *testing.T) {
			before := snapshotDir(t, d)
			ro, err := pebblestore.OpenReadOnly(d, pebblestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ro2, err := pebblestore.OpenReadOnly(d, pebblestore.Options{})
			if err != nil {
				t.Fatalf("a second read-only open: %v", err)
			}
			checkChunks(t, ro, chunks)
			checkChunks(t, ro2, chunks)
			if st, err := ro.Stats(ctx); err != nil || st.Chunks != uint64(len(chunks)) {
				t.Errorf("Stats = %+v, %v; want %d chunks", st, err, len(chunks))
			}
			if _, err := ro.PutChunk(ctx, randomChunk(r, 1000)); !errors.Is(err, castore.ErrInvalid) {
				t.Errorf("PutChunk on a read-only store = %v, want ErrInvalid", err)
			}
			if err := ro.SetMeta(ctx, castore.MetaRecord{Kind: byte('p'), Key: []byte("k"), Value: []byte("v")}); !errors.Is(err, castore.ErrInvalid) {
				t.Errorf("SetMeta on a read-only store = %v, want ErrInvalid", err)
			}
			if _, err := ro.DeleteChunk(ctx, chunks[0].Digest()); !errors.Is(err, castore.ErrInvalid) {
				t.Errorf("DeleteChunk on a read-only store = %v, want ErrInvalid", err)
			}
			if err := ro.Sync(ctx); err != nil {
				t.Errorf("Sync on a read-only store: %v", err)
			}
			if err := ro2.Close(); err != nil {
				t.Fatal(err)
			}
			if err := ro.Close(); err != nil {
				t.Fatal(err)
			}
			sameSnapshot(t, before, snapshotDir(t, d))
		})
	}
}

// du returns what `du -s --block-size=1` says of dir.
func du(t testing.TB, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "--block-size=1", dir).Output()
	if err != nil {
		t.Fatalf("du %s: %v", dir, err)
	}
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		t.Fatalf("du output %q: %v", out, err)
	}
	return n
}

// TestPebbleDiskBytes: DiskBytes is what du says (allocated blocks, not
// file sizes), and a closed store keeps no spare write-ahead logs: with
// 1 MiB memtables and 8 MiB written, Pebble would keep several obsolete
// logs for reuse, each preallocated to 1.1 MiB.
func TestPebbleDiskBytes(t *testing.T) {
	ctx := context.Background()
	mnt := mountTmpfs(t, 64<<20) // tmpfs: fallocate shows in the blocks
	dir := filepath.Join(mnt, "store")
	opts := pebblestore.Options{CacheSize: 4 << 20, MemTableSize: 1 << 20, MinFreeBytes: 1 << 20}
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 10))
	for range 128 {
		if _, err := s.PutChunk(ctx, randomChunk(r, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var logs int64
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, e.Name()), &st); err != nil {
			t.Fatal(err)
		}
		logs += st.Blocks * 512
	}
	if logs > 64<<10 {
		t.Errorf("a closed store keeps %d bytes of write-ahead logs, want at most 64 KiB", logs)
	}

	ro, err := pebblestore.OpenReadOnly(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	got, err := ro.DiskBytes()
	if err != nil {
		t.Fatal(err)
	}
	if want := du(t, dir); got != want {
		t.Errorf("DiskBytes = %d, du says %d", got, want)
	}
	if got < 8<<20 {
		t.Errorf("DiskBytes = %d for 8 MiB of incompressible chunks", got)
	}
	t.Logf("DiskBytes %d, write-ahead logs %d bytes", got, logs)
}

// TestPebbleRoom: Room admits what fits on the store's disk beyond its
// reserve and refuses, with ErrNoSpace naming the directory, what does
// not.
func TestPebbleRoom(t *testing.T) {
	mnt := mountTmpfs(t, 256<<20)
	dir := filepath.Join(mnt, "store")
	s, err := pebblestore.Open(dir, smallStoreOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Room(1 << 20); err != nil {
		t.Errorf("Room(1 MiB) with about 256 MiB free: %v", err)
	}
	if err := s.Room(256 << 20); !errors.Is(err, castore.ErrNoSpace) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Room(256 MiB) on a 256 MiB disk = %v, want ErrNoSpace naming %s", err, dir)
	}
}
