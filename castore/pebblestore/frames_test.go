package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// framedOptions packs small frames, so that a test's few chunks fill
// several.
var framedOptions = pebblestore.Options{
	CacheSize:    8 << 20,
	MemTableSize: 16 << 20,
	Frames:       pebblestore.FrameOptions{Size: 64 << 10, CacheSize: 1 << 20},
}

func openFramed(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// versionedChunks returns n chunks of text that changes a little from one
// version to the next, as successive releases of a file do.
func versionedChunks(version, n int) [][]byte {
	var out [][]byte
	for i := range n {
		var b bytes.Buffer
		for line := 0; b.Len() < 16<<10; line++ {
			fmt.Fprintf(&b, "chunk %d line %d: func f%d(x int) int { return x * %d }\n", i, line, line, (line*7+i)%13)
			if line%50 == version {
				fmt.Fprintf(&b, "// changed in version %d\n", version)
			}
		}
		out = append(out, b.Bytes())
	}
	return out
}

// frameFiles returns the frame files under dir and their total size.
func frameFiles(t testing.TB, dir string) ([]string, int64) {
	t.Helper()
	var files []string
	size := walkFiles(t, filepath.Join(dir, "frames"), func(p string) { files = append(files, p) })
	return files, size
}

// walkFiles calls fn with each file under root (none when root does not
// exist) and returns their total size.
func walkFiles(t testing.TB, root string, fn func(path string)) int64 {
	t.Helper()
	var size int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fn(p)
		size += info.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return size
}

func putAll(t testing.TB, s castore.Store, chunks [][]byte) []castore.Digest {
	t.Helper()
	var ds []castore.Digest
	for _, c := range chunks {
		ds = append(ds, castoretest.MustPutChunk(t, s, c))
	}
	return ds
}

func checkAll(t testing.TB, s castore.ChunkStore, ds []castore.Digest, chunks [][]byte) {
	t.Helper()
	for i, d := range ds {
		if got := castoretest.MustGetChunk(t, s, d); !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d (%s) differs", i, d)
		}
	}
}

// checkStoredBytes: StoredBytes is what the frame files hold plus the
// chunks still inline, here none.
func checkStoredBytes(t testing.TB, s *pebblestore.Store) castore.Stats {
	t.Helper()
	st := castoretest.MustStats(t, s)
	files, size := frameFiles(t, s.Dir())
	if st.StoredBytes != uint64(size) || st.Frames != uint64(len(files)) {
		t.Fatalf("Stats say %d frames of %d bytes; the directory holds %d of %d", st.Frames, st.StoredBytes, len(files), size)
	}
	return st
}

func TestFramesPackAndRead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	chunks := versionedChunks(0, 40)
	ds := putAll(t, s, chunks)
	checkAll(t, s, ds, chunks) // inline or packed, whichever the packer has reached
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := checkStoredBytes(t, s)
	if st.Frames < 5 || st.StoredBytes*4 > st.UniqueChunkBytes {
		t.Fatalf("Stats %+v: want the 640 KiB of text in 10 frames, compressed at least 4x", st)
	}
	checkAll(t, s, ds, chunks)

	// A packed chunk's stored form is the raw bytes.
	enc, err := s.GetEncodedChunk(ctx, ds[3], nil)
	if err != nil || enc[0] != castore.CodecRaw || !bytes.Equal(enc[1:], chunks[3]) {
		t.Fatalf("GetEncodedChunk of a packed chunk = %d bytes, %v", len(enc), err)
	}
	s.Close()
	s = openFramed(t, dir)
	checkAll(t, s, ds, chunks)
	if got := checkStoredBytes(t, s); got != st {
		t.Fatalf("Stats after reopening = %+v, want %+v", got, st)
	}
}

// TestFramesCrashBeforeSwitch: a crash after chunks were put and synced but
// before they were packed leaves them inline and queued; the next open
// packs them. A frame written but never registered is deleted on open.
func TestFramesCrashBeforeSwitch(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "store")
	opts := framedOptions
	opts.Frames.Size = 8 << 20 // the packer never gets a full frame
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	chunks := versionedChunks(1, 20)
	ds := putAll(t, s, chunks)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(base, "crashed")
	copyDir(t, dir, crashed)
	s.Close()

	stray := filepath.Join(crashed, "frames", "ab", "ab"+strings.Repeat("0", 62))
	if err := os.MkdirAll(filepath.Dir(stray), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("a frame never registered"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = openFramed(t, crashed)
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a stray frame survived opening: %v", err)
	}
	checkAll(t, s, ds, chunks)
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	st := checkStoredBytes(t, s)
	if st.Chunks != uint64(len(chunks)) || st.Frames == 0 {
		t.Fatalf("Stats after packing = %+v", st)
	}
	checkAll(t, s, ds, chunks)
}

func TestFramesCorrupt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	chunks := versionedChunks(2, 8)
	ds := putAll(t, s, chunks)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The packer kept the frames decoded too: without those files, every
	// read decodes its frame.
	if err := os.RemoveAll(filepath.Join(dir, "decoded")); err != nil {
		t.Fatal(err)
	}
	files, _ := frameFiles(t, dir)
	if len(files) == 0 {
		t.Fatal("no frame files")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = openFramed(t, dir)
	for _, d := range ds {
		got, err := s.GetChunk(ctx, d, nil)
		if !errors.Is(err, castore.ErrCorrupt) {
			t.Fatalf("GetChunk from a damaged frame = %d bytes, %v; want ErrCorrupt", len(got), err)
		}
		if !strings.Contains(err.Error(), "frame ") || !strings.Contains(err.Error(), d.String()) {
			t.Errorf("error %q names neither the frame nor the chunk", err)
		}
	}

	// A frame file gone is corruption too, naming the frame.
	for _, f := range files {
		os.Remove(f)
	}
	s.Close()
	s = openFramed(t, dir)
	if _, err := s.GetChunk(ctx, ds[0], nil); !errors.Is(err, castore.ErrCorrupt) || !strings.Contains(err.Error(), "frame") {
		t.Fatalf("GetChunk with its frame gone = %v; want ErrCorrupt naming the frame", err)
	}
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	var all [][]byte
	var ds []castore.Digest
	var order []castore.Digest
	versions := make([][]castore.Digest, 4)
	for v := range versions {
		chunks := versionedChunks(v+3, 24)
		versions[v] = putAll(t, s, chunks)
		all = append(all, chunks...)
		ds = append(ds, versions[v]...)
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 24 { // each chunk next to its other versions
		for v := range versions {
			order = append(order, versions[v][i])
		}
	}
	hot := checkStoredBytes(t, s)

	dry, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(order), DryRun: true})
	if err != nil || dry.Chunks != len(ds) || dry.FramesIn != int(hot.Frames) || dry.FramesOut != 0 || dry.StoredIn != hot.StoredBytes {
		t.Fatalf("dry run = %+v, %v; stats %+v", dry, err, hot)
	}
	if got := checkStoredBytes(t, s); got != hot {
		t.Fatalf("a dry run changed the stats: %+v, was %+v", got, hot)
	}

	var progress int64
	res, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(order), FrameSize: 256 << 10, Progress: func(done, total int64) { progress = done }})
	if err != nil {
		t.Fatal(err)
	}
	cold := checkStoredBytes(t, s)
	t.Logf("hot: %d frames, %d bytes; compacted: %+v", hot.Frames, hot.StoredBytes, res)
	if res.FramesDeleted != int(hot.Frames) || cold.Frames != uint64(res.FramesOut) || progress != int64(res.DecodedBytes) {
		t.Fatalf("compaction %+v; stats before %+v, after %+v; progress %d", res, hot, cold, progress)
	}
	if cold.StoredBytes >= hot.StoredBytes*3/4 {
		t.Errorf("versions side by side stored %d bytes, in ingest order %d: want a quarter less at least", cold.StoredBytes, hot.StoredBytes)
	}
	if cold.Chunks != hot.Chunks || cold.UniqueChunkBytes != hot.UniqueChunkBytes {
		t.Fatalf("stats after compaction %+v, before %+v", cold, hot)
	}
	checkAll(t, s, ds, all)

	// New chunks join: a full compaction rewrites the cold frames with
	// them, older chunks still readable; then a reopen.
	more := versionedChunks(9, 24)
	mds := putAll(t, s, more)
	if _, err := s.Compact(ctx, pebblestore.CompactOptions{Order: listOrder(append(order, mds...)), Full: true}); err != nil {
		t.Fatal(err)
	}
	checkStoredBytes(t, s)
	s.Close()
	s = openFramed(t, dir)
	checkAll(t, s, ds, all)
	checkAll(t, s, mds, more)
	checkStoredBytes(t, s)
}

// TestCompactInlineChunks: chunks stored inline (by a store with frames
// off, as layout version 1 stored every chunk) are moved into frames.
func TestCompactInlineChunks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openUnpacked(t, dir)
	chunks := versionedChunks(5, 30)
	ds := putAll(t, s, chunks)
	s.Close()
	s = openFramed(t, dir)
	before := castoretest.MustStats(t, s)
	res, err := s.Compact(ctx, pebblestore.CompactOptions{})
	if err != nil || res.InlineChunks != len(chunks) || res.FramesIn != 0 {
		t.Fatalf("Compact = %+v, %v", res, err)
	}
	after := checkStoredBytes(t, s)
	if after.StoredBytes >= before.StoredBytes || after.Chunks != before.Chunks {
		t.Fatalf("stats %+v after compacting, %+v before", after, before)
	}
	checkAll(t, s, ds, chunks)
}

// TestFramesEmptyChunk: an empty chunk packed alone (a frame of no bytes,
// which is never written) stays readable.
func TestFramesEmptyChunk(t *testing.T) {
	ctx := context.Background()
	s := openFramed(t, t.TempDir())
	d := castoretest.MustPutChunk(t, s, []byte{})
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetChunk(ctx, d, nil); err != nil || len(got) != 0 {
		t.Fatalf("GetChunk of the empty chunk after packing = %d bytes, %v", len(got), err)
	}
	if st := castoretest.MustStats(t, s); st.Frames != 0 || st.Chunks != 1 {
		t.Fatalf("Stats = %+v; want one chunk, no frame", st)
	}
}
