package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// testPebbleOptions keep test stores small.
var testPebbleOptions = pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20}

func openPebble(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, testPebbleOptions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openUnpacked opens the store in dir with frames off: every chunk stays
// inline, for tests of Pebble's own handling of chunk values.
func openUnpacked(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	opts := testPebbleOptions
	opts.Frames.Off = true
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// quietLogger drops Pebble's informational messages.
type quietLogger struct{ pebble.Logger }

func (quietLogger) Infof(string, ...any) {}

func TestPebbleStore(t *testing.T) {
	castoretest.Run(t, func(t *testing.T) castore.Store { return openPebble(t, t.TempDir()) })
}

func TestPebbleStoreFramesOff(t *testing.T) {
	castoretest.Run(t, func(t *testing.T) castore.Store { return openUnpacked(t, t.TempDir()) })
}

func TestPebbleOptions(t *testing.T) {
	if err := pebblestore.DefaultOptions.Validate(); err != nil {
		t.Fatalf("default options: %v", err)
	}
	if got := (pebblestore.Options{}).EnsureDefaults(); got != pebblestore.DefaultOptions {
		t.Fatalf("EnsureDefaults of zero options = %+v", got)
	}
	for _, o := range []pebblestore.Options{
		{CacheSize: -1},
		{MemTableSize: 1000},
		{ValueSeparationMinSize: -1},
		{LockStripes: 100},
		{FlushFileSize: 1000},
	} {
		err := o.EnsureDefaults().Validate()
		if !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", o, err)
		}
		if _, err := pebblestore.Open(t.TempDir(), o); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("Open with %+v: %v, want ErrInvalid", o, err)
		}
	}
}

func TestPebbleReopen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "new", "castore")
	s := openUnpacked(t, dir)
	chunk := castoretest.CompressibleBytes(50 << 10)
	cd := castoretest.MustPutChunk(t, s, chunk)
	blob := castoretest.RandomBytes(1, 300<<10)
	bd, refs := castoretest.MustPutBlob(t, s, blob, 64<<10)
	dd := castoretest.MustPutDirectory(t, s, &castore.Directory{
		Files: []castore.FileEntry{{Name: "f", Digest: bd, Size: uint64(len(blob))}},
	})
	before := castoretest.MustStats(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChunk(ctx, cd, nil); err == nil {
		t.Fatal("GetChunk on a closed store succeeded")
	}
	if _, err := s.Stats(ctx); err == nil {
		t.Fatal("Stats on a closed store succeeded")
	}

	s = openUnpacked(t, dir)
	if got := castoretest.MustStats(t, s); got != before {
		t.Fatalf("Stats after reopening = %+v, want %+v", got, before)
	}
	if got := castoretest.MustGetChunk(t, s, cd); !bytes.Equal(got, chunk) {
		t.Fatal("chunk differs after reopening")
	}
	idx, err := s.GetBlobIndex(ctx, bd)
	if err != nil || !slices.Equal(idx, refs) {
		t.Fatalf("GetBlobIndex after reopening = %v, %v", idx, err)
	}
	dir2, err := s.GetDirectory(ctx, dd)
	if err != nil || len(dir2.Files) != 1 || dir2.Files[0].Digest != bd {
		t.Fatalf("GetDirectory after reopening = %+v, %v", dir2, err)
	}

	// Counters go on from where they were, also across a flush.
	castoretest.MustPutChunk(t, s, []byte("one more"))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := before
	want.Chunks++
	want.UniqueChunkBytes += uint64(len("one more"))
	want.StoredBytes += uint64(len("one more")) + 1
	if got := castoretest.MustStats(t, s); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openUnpacked(t, dir)
	if got := castoretest.MustStats(t, s); got != want {
		t.Fatalf("Stats after second reopening = %+v, want %+v", got, want)
	}
	n, err := s.DiskBytes()
	if err != nil || n <= 0 {
		t.Fatalf("DiskBytes = %d, %v", n, err)
	}
}

// filesBySuffix returns the total size and number of the files in dir whose
// names end in suffix.
func filesBySuffix(t *testing.T, dir, suffix string) (size int64, n int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			size += info.Size()
			n++
		}
	}
	return size, n
}

func TestPebbleValueSeparation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openUnpacked(t, dir)
	const chunkSize, total = 256 << 10, 32 << 20
	var digests []castore.Digest
	for i := range total / chunkSize {
		digests = append(digests, castoretest.MustPutChunk(t, s, castoretest.RandomBytes(uint64(i), chunkSize)))
	}
	// Small values stay in the sstables.
	castoretest.MustPutChunk(t, s, []byte("small"))
	castoretest.MustPutDirectory(t, s, &castore.Directory{})
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	blobBytes, blobFiles := filesBySuffix(t, dir, ".blob")
	sstBytes, sstFiles := filesBySuffix(t, dir, ".sst")
	t.Logf("%d MiB of chunks: %d blob files of %d bytes, %d sstables of %d bytes", total>>20, blobFiles, blobBytes, sstFiles, sstBytes)
	if blobFiles == 0 || blobBytes < total {
		t.Fatalf("%d blob files of %d bytes after writing %d bytes of chunks: values not separated", blobFiles, blobBytes, total)
	}
	if sstBytes > total/16 {
		t.Fatalf("sstables hold %d bytes for %d bytes of chunks: values not separated", sstBytes, total)
	}
	// Values read back through their blob handles.
	for i, d := range digests {
		if i%16 == 0 && !bytes.Equal(castoretest.MustGetChunk(t, s, d), castoretest.RandomBytes(uint64(i), chunkSize)) {
			t.Fatalf("chunk %d differs after flush", i)
		}
		castoretest.MustHaveChunk(t, s, d, true)
	}
	du, err := s.DiskBytes()
	if err != nil || du < total {
		t.Fatalf("DiskBytes = %d, %v; want at least %d", du, err, total)
	}
}

// TestPebbleCorruptFile damages a blob file on disk: Pebble's block
// checksum catches it, and GetChunk reports ErrCorrupt. (Pebble then looks
// for a single flipped bit, in time quadratic in the block size: a small
// chunk keeps the test fast.)
func TestPebbleCorruptFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openUnpacked(t, dir)
	data := castoretest.RandomBytes(1, 8<<10)
	d := castoretest.MustPutChunk(t, s, data)
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()

	blobs, _ := filepath.Glob(filepath.Join(dir, "*.blob"))
	if len(blobs) != 1 {
		t.Fatalf("blob files %v, want one", blobs)
	}
	f, err := os.OpenFile(blobs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), 4<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = openUnpacked(t, dir)
	castoretest.MustHaveChunk(t, s, d, true)
	if _, err := s.GetChunk(ctx, d, nil); !errors.Is(err, castore.ErrCorrupt) {
		t.Fatalf("GetChunk of a damaged chunk: %v, want ErrCorrupt", err)
	}
}

// TestPebbleUndecodableChunk stores values under chunk keys that the codec
// cannot decode, through Pebble directly: GetChunk reports ErrCorrupt. (It
// does not re-hash, so a value that decodes to other bytes goes unnoticed
// here; castore.Verifying and the blob reader catch that.)
func TestPebbleUndecodableChunk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir)
	good := castoretest.MustPutChunk(t, s, []byte("good"))
	// Flushed, the counters' merge operands are out of the write-ahead
	// log, so opening the database below does not merge them.
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()

	bad := map[string][]byte{
		"empty":           {},
		"unknown codec":   {9, 'x'},
		"lz4 no header":   {castore.CodecLZ4},
		"lz4 huge length": append([]byte{castore.CodecLZ4}, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"lz4 garbage":     {castore.CodecLZ4, 100, 0xff, 0xff, 0xff},
	}
	db, err := pebble.Open(dir, &pebble.Options{
		FormatMajorVersion: pebble.FormatValueSeparation,
		Logger:             quietLogger{pebble.DefaultLogger},
		// Pebble opens a database only with the merger it was made with;
		// this one must never be called.
		Merger: &pebble.Merger{
			Name: "nixcas.castore.counters.v1",
			Merge: func(_, _ []byte) (pebble.ValueMerger, error) {
				return nil, errors.New("unexpected merge")
			},
		},
		DisableAutomaticCompactions: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range bad {
		d := castore.Hash([]byte(name))
		if err := db.Set(append([]byte{'c'}, d[:]...), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openPebble(t, dir)
	for name := range bad {
		d := castore.Hash([]byte(name))
		castoretest.MustHaveChunk(t, s, d, true)
		got, err := s.GetChunk(ctx, d, []byte("dst"))
		if !errors.Is(err, castore.ErrCorrupt) {
			t.Errorf("%s: GetChunk: %v, want ErrCorrupt", name, err)
		}
		if string(got) != "dst" {
			t.Errorf("%s: GetChunk returned %q, want dst unchanged", name, got)
		}
	}
	if got := castoretest.MustGetChunk(t, s, good); string(got) != "good" {
		t.Fatalf("good chunk read back as %q", got)
	}
}

func TestPebbleMeta(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openPebble(t, dir)

	for _, kind := range []byte{'c', 'b', 'd', 'm'} {
		err := s.SetMeta(ctx, castore.MetaRecord{Kind: kind, Key: []byte("k"), Value: []byte("v")})
		if !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("SetMeta of kind %c: %v, want ErrInvalid", kind, err)
		}
		if _, err := s.GetMeta(ctx, kind, []byte("k")); !errors.Is(err, castore.ErrInvalid) {
			t.Errorf("GetMeta of kind %c: %v, want ErrInvalid", kind, err)
		}
	}

	p := byte('p')
	n := byte('n')
	if _, err := s.GetMeta(ctx, p, []byte("missing")); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("GetMeta of a missing key: %v, want ErrNotFound", err)
	}
	err := s.SetMeta(ctx,
		castore.MetaRecord{Kind: p, Key: []byte("aa2"), Value: []byte("info 2")},
		castore.MetaRecord{Kind: p, Key: []byte("aa1"), Value: []byte("info 1")},
		castore.MetaRecord{Kind: p, Key: []byte("ab"), Value: []byte("info 3")},
		castore.MetaRecord{Kind: p, Key: []byte{0xff}, Value: []byte("info 4")},
		castore.MetaRecord{Kind: n, Key: []byte("nar"), Value: []byte("aa1")},
	)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.GetMeta(ctx, p, []byte("aa1"))
	if err != nil || string(v) != "info 1" {
		t.Fatalf("GetMeta = %q, %v", v, err)
	}
	scan := func(kind byte, prefix string) []string {
		t.Helper()
		var got []string
		err := s.ScanMeta(ctx, kind, []byte(prefix), func(k, v []byte) error {
			got = append(got, string(k)+"="+string(v))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := scan(p, "aa"), []string{"aa1=info 1", "aa2=info 2"}; !slices.Equal(got, want) {
		t.Fatalf("ScanMeta(p, aa) = %q, want %q", got, want)
	}
	if got := scan(p, ""); len(got) != 4 || got[3] != "\xff=info 4" {
		t.Fatalf("ScanMeta(p) = %q", got)
	}
	if got, want := scan(n, ""), []string{"nar=aa1"}; !slices.Equal(got, want) {
		t.Fatalf("ScanMeta(n) = %q, want %q", got, want)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.ScanMeta(ctx, p, nil, func(k, v []byte) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("ScanMeta stopping at the first record: %v after %d calls", err, calls)
	}

	if err := s.SetMeta(ctx, castore.MetaRecord{Kind: p, Key: []byte("aa2"), Delete: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta(ctx, p, []byte("aa2")); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("GetMeta after delete: %v, want ErrNotFound", err)
	}
	// Records of other kinds are not castore's: they leave its counters
	// alone and survive reopening.
	if st := castoretest.MustStats(t, s); st != (castore.Stats{}) {
		t.Fatalf("Stats = %+v after SetMeta only", st)
	}
	s.Close()
	s = openPebble(t, dir)
	if got, want := scan(p, "a"), []string{"aa1=info 1", "ab=info 3"}; !slices.Equal(got, want) {
		t.Fatalf("ScanMeta after reopening = %q, want %q", got, want)
	}
}

func TestPebbleRefusesOtherDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{pebble.DefaultLogger}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("some key"), []byte("value"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := pebblestore.Open(dir, testPebbleOptions); err == nil {
		s.Close()
		t.Fatal("Open opened a database it did not make")
	}
}

func TestPebbleClosed(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t, t.TempDir())
	s.Close()
	d := castore.Hash(nil)
	errs := []error{}
	_, err := s.HasChunk(ctx, d)
	errs = append(errs, err)
	_, err = s.PutChunk(ctx, castore.NewChunk(nil))
	errs = append(errs, err)
	errs = append(errs, s.PutBlob(ctx, d, 0, nil))
	_, err = s.PutDirectory(ctx, &castore.Directory{})
	errs = append(errs, err)
	errs = append(errs, s.Sync(ctx))
	errs = append(errs, s.SetMeta(ctx, castore.MetaRecord{Kind: 'p', Key: []byte("k")}))
	for i, err := range errs {
		if err == nil || !strings.HasPrefix(err.Error(), "castore: ") {
			t.Errorf("operation %d on a closed store: %v", i, err)
		}
	}
}

// BenchmarkPebbleHasChunk compares HasChunk, which seeks an iterator and
// does not read the value, with a Get of the whole chunk, for 256 KiB
// chunks in blob files.
func BenchmarkPebbleHasChunk(b *testing.B) {
	ctx := context.Background()
	s := openPebble(b, b.TempDir())
	var ds []castore.Digest
	for i := range 256 {
		ds = append(ds, castoretest.MustPutChunk(b, s, castoretest.RandomBytes(uint64(i), 256<<10)))
	}
	if err := s.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("HasChunk", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if ok, err := s.HasChunk(ctx, ds[i%len(ds)]); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("HasChunkMiss", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if ok, err := s.HasChunk(ctx, castore.Digest{byte(i), byte(i >> 8)}); err != nil || ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("GetChunk", func(b *testing.B) {
		var buf []byte
		for i := 0; b.Loop(); i++ {
			var err error
			if buf, err = s.GetChunk(ctx, ds[i%len(ds)], buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PutChunkDuplicate", func(b *testing.B) {
		c := castore.NewChunk(castoretest.RandomBytes(0, 256<<10))
		for b.Loop() {
			if _, err := s.PutChunk(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("PutChunkNew", func(b *testing.B) {
		data := castoretest.RandomBytes(1<<40, 64<<10)
		b.SetBytes(int64(len(data)))
		for i := 0; b.Loop(); i++ {
			data[0], data[1], data[2], data[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			if _, err := s.PutChunk(ctx, castore.NewChunk(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
