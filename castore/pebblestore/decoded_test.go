package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// decodedOptions packs 64 KiB frames and keeps none in memory (each is
// larger than the memory cache), so that every read goes to the decoded
// files or decodes.
func decodedOptions(size int64) pebblestore.Options {
	o := framedOptions
	o.Frames.CacheSize = 1
	o.Frames.DecodedCacheSize = size
	return o
}

func openDecoded(t testing.TB, dir string, size int64) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, decodedOptions(size))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// decodedFiles returns the decoded frame files under dir (name → path)
// and their total size.
func decodedFiles(t testing.TB, dir string) (map[string]string, int64) {
	t.Helper()
	files := map[string]string{}
	size := walkFiles(t, filepath.Join(dir, "decoded"), func(p string) { files[filepath.Base(p)] = p })
	return files, size
}

// waitWrites waits until the store has written n decoded files in all.
func waitWrites(t testing.TB, s *pebblestore.Store, n uint64) pebblestore.DecodedCacheStats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.DecodedCacheStats()
		if st.Writes >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("decoded files written: %+v, want %d", st, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// packedStore returns a closed store in a new directory holding chunks
// packed into hot frames, with their digests and the frame count.
func packedStore(t testing.TB, chunks [][]byte) (string, []castore.Digest, int) {
	t.Helper()
	dir := t.TempDir()
	s, err := pebblestore.Open(dir, decodedOptions(-1))
	if err != nil {
		t.Fatal(err)
	}
	ds := putAll(t, s, chunks)
	if err := s.PackPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := frameFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("%d frames; want several", len(files))
	}
	if dec, _ := decodedFiles(t, dir); len(dec) != 0 {
		t.Fatalf("a store with the decoded cache off wrote %d decoded files", len(dec))
	}
	return dir, ds, len(files)
}

// TestDecodedCacheReads: the first read of each frame decodes it and
// writes its decoded file; later reads, in the same process and after a
// restart, come from those files byte for byte, decoding nothing.
func TestDecodedCacheReads(t *testing.T) {
	chunks := versionedChunks(1, 40)
	dir, ds, frames := packedStore(t, chunks)

	s := openDecoded(t, dir, 0)
	checkAll(t, s, ds, chunks)
	// A frame is decoded again while its file is not written yet (none
	// stays in memory here), but written once.
	st := waitWrites(t, s, uint64(frames))
	if st.Misses < uint64(frames) || st.Files != frames || st.Writes != uint64(frames) || st.MaxBytes != pebblestore.DefaultDecodedCacheSize {
		t.Fatalf("after a first read of %d frames: %+v", frames, st)
	}
	files, size := decodedFiles(t, dir)
	if len(files) != frames || size != st.Bytes {
		t.Fatalf("%d decoded files of %d bytes on disk; stats %+v", len(files), size, st)
	}
	objects, _ := frameFiles(t, dir)
	for _, f := range objects {
		if _, ok := files[filepath.Base(f)]; !ok {
			t.Errorf("frame %s has no decoded file", filepath.Base(f))
		}
	}

	misses, hits := st.Misses, st.Hits
	checkAll(t, s, ds, chunks)
	st = s.DecodedCacheStats()
	if st.Misses != misses || st.Hits-hits != uint64(len(ds)) {
		t.Fatalf("second read: %+v; want %d hits and no new decode", st, len(ds))
	}

	s.Close()
	s = openDecoded(t, dir, 0)
	if st := s.DecodedCacheStats(); st.Files != frames || st.Bytes != size {
		t.Fatalf("after a restart: %+v; want the %d files of %d bytes kept", st, frames, size)
	}
	checkAll(t, s, ds, chunks)
	if st := s.DecodedCacheStats(); st.Misses != 0 || st.Hits != uint64(len(ds)) {
		t.Fatalf("read after a restart: %+v; want every chunk from a decoded file", st)
	}
}

// TestDecodedCacheBound: the files stay within the bound, evicting the
// least recently used; a restart with a lower bound evicts down to it;
// every read stays exact.
func TestDecodedCacheBound(t *testing.T) {
	chunks := versionedChunks(2, 60)
	dir, ds, frames := packedStore(t, chunks)
	const bound = 200 << 10 // three 64 KiB frames and some
	s := openDecoded(t, dir, bound)
	checkAll(t, s, ds, chunks)
	checkAll(t, s, ds, chunks)
	s.Close() // waits for the writes queued
	st := s.DecodedCacheStats()
	files, size := decodedFiles(t, dir)
	if size > bound || st.Bytes != size || st.Files != len(files) || st.Evictions == 0 || len(files) == 0 || len(files) >= frames {
		t.Fatalf("bound %d, %d frames: %d files of %d bytes on disk; stats %+v", bound, frames, len(files), size, st)
	}

	s = openDecoded(t, dir, 100<<10)
	files, size = decodedFiles(t, dir)
	if size > 100<<10 || len(files) == 0 {
		t.Fatalf("reopened with a bound of 100 KiB: %d files of %d bytes", len(files), size)
	}
	checkAll(t, s, ds, chunks)
}

// TestDecodedCacheDamaged: a decoded file damaged on disk (changed, cut
// short, emptied, another frame's bytes, removed), after a restart or
// while the store runs, never yields wrong bytes: the read falls back to
// the frame, and the file is dropped and written again.
func TestDecodedCacheDamaged(t *testing.T) {
	chunks := versionedChunks(3, 40)
	dir, ds, frames := packedStore(t, chunks)
	{
		s := openDecoded(t, dir, 0)
		checkAll(t, s, ds, chunks)
		s.Close()
	}
	files, _ := decodedFiles(t, dir)
	if len(files) != frames {
		t.Fatalf("%d decoded files for %d frames", len(files), frames)
	}
	var other []byte // a decoded file of another frame
	for _, p := range files {
		other, _ = os.ReadFile(p)
		break
	}
	damages := []struct {
		name   string
		damage func(b []byte) []byte // nil: remove the file
	}{
		{"a flipped bit", func(b []byte) []byte { b[len(b)/3] ^= 1; return b }},
		{"every byte changed", func(b []byte) []byte {
			for i := range b {
				b[i]++
			}
			return b
		}},
		{"cut short", func(b []byte) []byte { return b[:len(b)/2] }},
		{"empty", func(b []byte) []byte { return nil }},
		{"another frame's bytes", func(b []byte) []byte { return bytes.Clone(other) }},
		{"removed", nil},
	}
	damageAll := func(t *testing.T, damage func([]byte) []byte) {
		files, _ := decodedFiles(t, dir)
		if len(files) != frames {
			t.Fatalf("%d decoded files for %d frames", len(files), frames)
		}
		for _, p := range files {
			if damage == nil {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range damages {
		for _, restart := range []bool{true, false} {
			name := tc.name + ", while running"
			if restart {
				name = tc.name + ", then a restart"
			}
			t.Run(name, func(t *testing.T) {
				s := openDecoded(t, dir, 0)
				if restart {
					s.Close()
					damageAll(t, tc.damage)
					s = openDecoded(t, dir, 0)
				} else {
					damageAll(t, tc.damage)
				}
				checkAll(t, s, ds, chunks)
				st := s.DecodedCacheStats()
				if st.Misses == 0 {
					t.Fatalf("no frame decoded again: %+v", st)
				}
				if tc.damage != nil && st.Damaged == 0 {
					t.Errorf("no damaged file counted: %+v", st)
				}
				s.Close() // the frames decoded again are written again
				checkAll(t, openDecoded(t, dir, 0), ds, chunks)
			})
		}
	}
	// A file cut short after it was checked and opened: the reads past
	// its new end fail and fall back to the frame.
	t.Run("cut short while open", func(t *testing.T) {
		s := openDecoded(t, dir, 0)
		checkAll(t, s, ds, chunks)
		if st := s.DecodedCacheStats(); st.Misses != 0 {
			t.Fatalf("files not whole before the test: %+v", st)
		}
		damageAll(t, func(b []byte) []byte { return b[:len(b)/2] })
		checkAll(t, s, ds, chunks)
		if st := s.DecodedCacheStats(); st.Damaged == 0 || st.Misses == 0 {
			t.Fatalf("no damaged file counted: %+v", st)
		}
	})
	// In the end the files are whole again: a fresh store reads every
	// chunk from them.
	s := openDecoded(t, dir, 0)
	checkAll(t, s, ds, chunks)
	if st := s.DecodedCacheStats(); st.Misses != 0 || st.Damaged != 0 {
		t.Fatalf("after the damaged files were written again: %+v", st)
	}
}

// TestDecodedCacheFrameDeleted: frames deleted by compaction, and by a
// collection, take their decoded files with them; reads stay exact.
func TestDecodedCacheFrameDeleted(t *testing.T) {
	ctx := context.Background()
	chunks := versionedChunks(4, 40)
	dir, ds, frames := packedStore(t, chunks)
	s := openDecoded(t, dir, 0)
	checkAll(t, s, ds, chunks)
	waitWrites(t, s, uint64(frames))
	hot, _ := frameFiles(t, dir)

	if _, err := s.Compact(ctx, pebblestore.CompactOptions{}); err != nil {
		t.Fatal(err)
	}
	files, _ := decodedFiles(t, dir)
	for _, f := range hot {
		if _, ok := files[filepath.Base(f)]; ok {
			t.Errorf("compacted frame %s still has a decoded file", filepath.Base(f))
		}
	}
	if st := s.DecodedCacheStats(); st.Files != len(files) {
		t.Fatalf("stats %+v; %d files on disk", st, len(files))
	}
	checkAll(t, s, ds, chunks)
	s.Close() // waits for the cold frames' decoded files
	s = openDecoded(t, dir, 0)
	if files, _ = decodedFiles(t, dir); len(files) == 0 {
		t.Fatal("no decoded file of a cold frame")
	}

	// A collection with no roots deletes every frame, and so every
	// decoded file.
	noRoots := func(context.Context, func(string, castore.Entry) error) error { return nil }
	res, err := s.GC(ctx, pebblestore.GCOptions{Roots: noRoots})
	if err != nil {
		t.Fatal(err)
	}
	if cold, _ := frameFiles(t, dir); len(cold) != 0 || res.FramesDeleted == 0 {
		t.Fatalf("collection %+v left %d frames", res, len(cold))
	}
	if files, _ = decodedFiles(t, dir); len(files) != 0 {
		t.Fatalf("%d decoded files left of deleted frames", len(files))
	}
	if st := s.DecodedCacheStats(); st.Files != 0 || st.Bytes != 0 {
		t.Fatalf("stats after the collection: %+v", st)
	}
}

// TestDecodedCacheDecodeOnce: readers asking at the same time for chunks
// of one frame decode it once.
func TestDecodedCacheDecodeOnce(t *testing.T) {
	ctx := context.Background()
	chunks := versionedChunks(5, 40)
	dir, ds, _ := packedStore(t, chunks)
	// The memory cache holds the frame while the readers take its chunks
	// (its decoded file may not be written yet).
	o := decodedOptions(0)
	o.Frames.CacheSize = 1 << 20
	s, err := pebblestore.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := ds[:3] // chunks of 16 KiB: all in the first frame
	start := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 16 {
		wg.Go(func() {
			<-start
			d := first[r%len(first)]
			got, err := s.GetChunk(ctx, d, nil)
			if err != nil || !bytes.Equal(got, chunks[r%len(first)]) {
				t.Errorf("reader %d: %d bytes, %v", r, len(got), err)
			}
		})
	}
	close(start)
	wg.Wait()
	if st := s.DecodedCacheStats(); st.Misses != 1 {
		t.Fatalf("16 readers of one frame: %+v; want one decode", st)
	}
}

// TestDecodedCacheOff: with a negative size, and on a read-only store,
// reads write no decoded file.
func TestDecodedCacheOff(t *testing.T) {
	chunks := versionedChunks(6, 20)
	dir, ds, _ := packedStore(t, chunks)
	s := openDecoded(t, dir, -1)
	checkAll(t, s, ds, chunks)
	s.Close()
	ro, err := pebblestore.OpenReadOnly(dir, decodedOptions(0))
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, ro, ds, chunks)
	ro.Close()
	if files, _ := decodedFiles(t, dir); len(files) != 0 {
		t.Fatalf("%d decoded files written with the cache off or read-only", len(files))
	}
	if _, err := os.Stat(filepath.Join(dir, "decoded")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("decoded directory: %v; want none", err)
	}
}

// TestDecodedCacheEarlierFormat: decoded files as earlier versions wrote
// them (ending with a BLAKE3 rather than an XXH64 and a magic) are
// dropped after a restart without being counted as damaged, the frames
// are decoded again, and their files written anew.
func TestDecodedCacheEarlierFormat(t *testing.T) {
	chunks := versionedChunks(3, 20)
	dir, ds, frames := packedStore(t, chunks)
	{
		s := openDecoded(t, dir, 0)
		checkAll(t, s, ds, chunks)
		s.Close()
	}
	files, _ := decodedFiles(t, dir)
	if len(files) != frames {
		t.Fatalf("%d decoded files for %d frames", len(files), frames)
	}
	const trailer = 16 // XXH64 and "nixcasD2"
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(b, []byte("nixcasD2")) {
			t.Fatalf("%s does not end with the format's magic", p)
		}
		frame, err := castore.ParseDigest(filepath.Base(p))
		if err != nil {
			t.Fatal(err)
		}
		data := b[:len(b)-trailer]
		sum := castore.Hash(append(bytes.Clone(data), frame[:]...))
		if err := os.WriteFile(p, append(bytes.Clone(data), sum[:]...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := openDecoded(t, dir, 0)
	checkAll(t, s, ds, chunks)
	if st := s.DecodedCacheStats(); st.Damaged != 0 || st.Misses == 0 {
		t.Fatalf("after files of the earlier format: %+v; want frames decoded again, none counted damaged", st)
	}
	s.Close()
	files, _ = decodedFiles(t, dir)
	for _, p := range files {
		if b, err := os.ReadFile(p); err != nil || !bytes.HasSuffix(b, []byte("nixcasD2")) {
			t.Fatalf("%s not written again in this format: %v", p, err)
		}
	}
	s = openDecoded(t, dir, 0)
	checkAll(t, s, ds, chunks)
	if st := s.DecodedCacheStats(); st.Misses != 0 || st.Damaged != 0 {
		t.Fatalf("after the files were written again: %+v", st)
	}
}
