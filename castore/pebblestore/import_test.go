package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// receivedFrame is a frame as a server sends it: chunks side by side
// (with bytes between them that no chunk names, as in a frame of which a
// client needs only some chunks), compressed as one zstd frame with a
// content checksum, named by the BLAKE3 of its bytes.
type receivedFrame struct {
	name   castore.Digest
	stored []byte
	chunks []pebblestore.FrameChunk
	data   [][]byte // the chunks' bytes, as chunks lists them
}

func makeFrame(t testing.TB, chunks [][]byte) receivedFrame {
	t.Helper()
	var f receivedFrame
	var decoded []byte
	for i, c := range chunks {
		decoded = append(decoded, bytes.Repeat([]byte{byte(i)}, 100)...) // unnamed bytes
		f.chunks = append(f.chunks, pebblestore.FrameChunk{Digest: castore.Hash(c), Offset: uint32(len(decoded)), Length: uint32(len(c))})
		f.data = append(f.data, c)
		decoded = append(decoded, c...)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	f.stored = enc.EncodeAll(decoded, nil)
	f.name = castore.Hash(f.stored)
	return f
}

func verified(t testing.TB, f receivedFrame) *pebblestore.VerifiedFrame {
	t.Helper()
	vf, err := pebblestore.VerifyFrame(f.name, f.stored, f.chunks)
	if err != nil {
		t.Fatal(err)
	}
	return vf
}

// checkCounters: the counters Stats keeps agree with a recount of the
// records.
func checkCounters(t testing.TB, s *pebblestore.Store) castore.Stats {
	t.Helper()
	st := castoretest.MustStats(t, s)
	re, err := s.Recount(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st != re {
		t.Fatalf("counters %+v, recount %+v", st, re)
	}
	return st
}

// TestImportFrames: imported frames are written once, as they came, and
// their chunks read back byte for byte, before and after a reopen; the
// counters agree with the records; a chunk the store had stays where it
// was; compaction and garbage collection handle imported frames.
func TestImportFrames(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := pebblestore.Open(dir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	chunks := versionedChunks(1, 8)
	had := castoretest.MustPutChunk(t, s, chunks[0]) // stored before, inline
	f1, f2 := makeFrame(t, chunks[:4]), makeFrame(t, chunks[4:])
	n, err := s.ImportFrames(ctx, []*pebblestore.VerifiedFrame{verified(t, f1), verified(t, f2)})
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 {
		t.Errorf("ImportFrames indexed %d chunks, want 7 (one was stored)", n)
	}
	if p, err := s.ChunkPlace(ctx, had); err != nil || p.Framed {
		t.Errorf("the chunk stored before the import: place %+v, %v; want it inline still", p, err)
	}
	for i, f := range []receivedFrame{f1, f2} {
		p, err := s.ChunkPlace(ctx, f.chunks[len(f.chunks)-1].Digest)
		if err != nil || p.Frame != f.name || p.Offset != f.chunks[len(f.chunks)-1].Offset {
			t.Errorf("frame %d's last chunk: place %+v, %v", i, p, err)
		}
	}
	ds := make([]castore.Digest, len(chunks))
	for i, c := range chunks {
		ds[i] = castore.Hash(c)
	}
	checkAll(t, s, ds, chunks)
	st := checkCounters(t, s)
	files, size := frameFiles(t, dir)
	if st.Frames != 2 || len(files) != 2 || size != int64(len(f1.stored)+len(f2.stored)) {
		t.Errorf("Stats %+v; frame files %d of %d bytes, want the 2 received of %d", st, len(files), size, len(f1.stored)+len(f2.stored))
	}
	// Importing again changes nothing.
	if n, err := s.ImportFrames(ctx, []*pebblestore.VerifiedFrame{verified(t, f1)}); err != nil || n != 0 {
		t.Errorf("importing a frame again: %d chunks, %v; want 0", n, err)
	}
	if again := checkCounters(t, s); again != st {
		t.Errorf("importing a frame again changed the counters: %+v, before %+v", again, st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = pebblestore.Open(dir, framedOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkAll(t, s, ds, chunks)
	if got := checkCounters(t, s); got != st {
		t.Errorf("after reopening: %+v, before %+v", got, st)
	}

	// Compaction rewrites the imported chunks into cold frames.
	res, err := s.Compact(ctx, pebblestore.CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The two imported, and the one Compact packs first of the chunk
	// stored inline.
	if res.FramesIn != 3 || res.Chunks != 8 {
		t.Errorf("Compact read %d frames and rewrote %d chunks, want 3 and 8", res.FramesIn, res.Chunks)
	}
	checkAll(t, s, ds, chunks)
	checkCounters(t, s)
	checkStoredBytes(t, s)

	// A collection keeping one file (of one chunk) frees the rest.
	keep := castore.Entry{Kind: castore.KindFile, Name: "keep", Digest: ds[5], Size: uint64(len(chunks[5]))}
	_, err = s.GC(ctx, pebblestore.GCOptions{
		Roots: func(ctx context.Context, yield func(string, castore.Entry) error) error {
			return yield("keep", keep)
		},
		RewriteBelow: 0.5,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, ds[5:6], chunks[5:6])
	if ok, err := s.HasChunk(ctx, ds[6]); err != nil || ok {
		t.Errorf("chunk 6 after the collection: %v, %v; want it freed", ok, err)
	}
	st = checkCounters(t, s)
	if st.Chunks != 1 {
		t.Errorf("after the collection: %+v, want 1 chunk", st)
	}
	checkStoredBytes(t, s)
}

// TestImportFrameImportedThenGC: garbage collection of a store whose
// frames were imported and never compacted frees frames with no live
// chunk and keeps the rest readable.
func TestImportFrameImportedThenGC(t *testing.T) {
	ctx := context.Background()
	s := openFramed(t, t.TempDir())
	chunks := versionedChunks(2, 6)
	f1, f2 := makeFrame(t, chunks[:3]), makeFrame(t, chunks[3:])
	if _, err := s.ImportFrames(ctx, []*pebblestore.VerifiedFrame{verified(t, f1), verified(t, f2)}); err != nil {
		t.Fatal(err)
	}
	keep := castore.Entry{Kind: castore.KindFile, Name: "keep", Digest: castore.Hash(chunks[4]), Size: uint64(len(chunks[4]))}
	_, err := s.GC(ctx, pebblestore.GCOptions{Roots: func(ctx context.Context, yield func(string, castore.Entry) error) error {
		return yield("keep", keep)
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, []castore.Digest{keep.Digest}, chunks[4:5])
	st := checkCounters(t, s)
	if st.Chunks != 1 || st.Frames != 1 {
		t.Errorf("after the collection: %+v, want 1 chunk in 1 frame", st)
	}
	checkStoredBytes(t, s)
}

// TestVerifyFrameRefuses: a frame whose bytes do not match its name, that
// does not decode, or that does not hold a chunk it is said to hold is
// refused with ErrCorrupt naming the frame, and gives nothing to import.
func TestVerifyFrameRefuses(t *testing.T) {
	chunks := versionedChunks(3, 3)
	good := makeFrame(t, chunks)
	hexName := func(f receivedFrame) string { return f.name.String() }
	flipped := good
	flipped.stored = bytes.Clone(good.stored)
	flipped.stored[len(flipped.stored)/2] ^= 1
	renamed := flipped // damaged bytes under their own name: zstd refuses them
	renamed.name = castore.Hash(renamed.stored)
	wrongDigest := good
	wrongDigest.chunks = append([]pebblestore.FrameChunk(nil), good.chunks...)
	wrongDigest.chunks[1].Digest = castore.Hash([]byte("another chunk"))
	shifted := good
	shifted.chunks = append([]pebblestore.FrameChunk(nil), good.chunks...)
	shifted.chunks[1].Offset++
	beyond := good
	beyond.chunks = append([]pebblestore.FrameChunk(nil), good.chunks...)
	beyond.chunks[2].Offset = 1 << 24
	truncated := good
	truncated.stored = good.stored[:len(good.stored)-4]
	truncated.name = castore.Hash(truncated.stored)
	for _, tc := range []struct {
		name string
		f    receivedFrame
		want string
	}{
		{"bytes changed", flipped, "hash to"},
		{"bytes changed, renamed", renamed, ""},
		{"truncated, renamed", truncated, ""},
		{"wrong chunk digest", wrongDigest, "hashes to"},
		{"chunk at the wrong offset", shifted, "hashes to"},
		{"chunk beyond the frame", beyond, "beyond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vf, err := pebblestore.VerifyFrame(tc.f.name, tc.f.stored, tc.f.chunks)
			if !errors.Is(err, castore.ErrCorrupt) || vf != nil {
				t.Fatalf("VerifyFrame = %v, %v; want ErrCorrupt", vf, err)
			}
			if !strings.Contains(err.Error(), hexName(tc.f)) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name frame %s (and %q)", err, hexName(tc.f), tc.want)
			}
			// Into a buffer that held another frame: refused the same.
			reused := bytes.Repeat([]byte{0xee}, 1<<20)
			if vf, err := pebblestore.VerifyFrameInto(tc.f.name, tc.f.stored, reused, tc.f.chunks); !errors.Is(err, castore.ErrCorrupt) || vf != nil {
				t.Fatalf("VerifyFrameInto = %v, %v; want ErrCorrupt", vf, err)
			}
		})
	}
	if _, err := pebblestore.VerifyFrame(good.name, good.stored, good.chunks); err != nil {
		t.Fatalf("the good frame: %v", err)
	}
}

// TestVerifyFrameInto: a frame verified into a buffer with room decodes
// into that buffer's memory, whatever it held before, and holds the same
// chunks as one verified into fresh memory; a buffer too small is not
// used.
func TestVerifyFrameInto(t *testing.T) {
	f := makeFrame(t, versionedChunks(3, 3))
	fresh := verified(t, f)
	n := len(fresh.Decoded())
	for _, tc := range []struct {
		name   string
		dst    []byte
		inDest bool
	}{
		{"room, garbage in it", bytes.Repeat([]byte{0xee}, n+100), true},
		{"room past its length", make([]byte, 3, n), true},
		{"too small", make([]byte, n/2), false},
		{"none", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vf, err := pebblestore.VerifyFrameInto(f.name, f.stored, tc.dst, f.chunks)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(vf.Decoded(), fresh.Decoded()) {
				t.Fatal("decoded bytes differ from those decoded into fresh memory")
			}
			if got := cap(tc.dst) > 0 && &vf.Decoded()[0] == &tc.dst[:1][0]; got != tc.inDest {
				t.Errorf("decoded into the buffer given: %v, want %v", got, tc.inDest)
			}
			for i, c := range f.data {
				if !bytes.Equal(vf.Chunk(i), c) {
					t.Errorf("chunk %d differs", i)
				}
			}
			if !bytes.Equal(vf.Stored(), f.stored) {
				t.Error("Stored is not the stored bytes given")
			}
		})
	}
}

// failingSync is an ObjectStore whose syncs fail: a process that dies
// after writing a frame and before it is durable, or before the index
// points at it.
type failingSync struct{ pebblestore.ObjectStore }

func (failingSync) SyncObjects(context.Context) error {
	return errors.New("the machine went down")
}

// TestImportFrameCrashBeforeIndex: a frame written whose chunks were never
// indexed (the sync before the index failed, as a crash there would leave
// it) is an object no record names: nothing points at it, the store is
// consistent, and the next writable open deletes it.
func TestImportFrameCrashBeforeIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := framedOptions
	opts.Objects = failingSync{pebblestore.NewDirObjects(filepath.Join(dir, "frames"))}
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	chunks := versionedChunks(4, 3)
	f := makeFrame(t, chunks)
	if _, err := s.ImportFrames(ctx, []*pebblestore.VerifiedFrame{verified(t, f)}); err == nil {
		t.Fatal("ImportFrames succeeded with a failing sync")
	}
	if files, _ := frameFiles(t, dir); len(files) != 1 {
		t.Fatalf("%d frame files after the failed import, want the 1 written", len(files))
	}
	for _, c := range f.chunks {
		if ok, err := s.HasChunk(ctx, c.Digest); err != nil || ok {
			t.Fatalf("chunk %s indexed after the failed import (%v)", c.Digest, err)
		}
	}
	if st := checkCounters(t, s); st.Frames != 0 || st.Chunks != 0 {
		t.Errorf("Stats after the failed import: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFramed(t, dir)
	if files, _ := frameFiles(t, dir); len(files) != 0 {
		t.Errorf("the unindexed frame survived reopening: %v", files)
	}
	checkCounters(t, s)
	// And the frame imports cleanly now.
	if n, err := s.ImportFrames(ctx, []*pebblestore.VerifiedFrame{verified(t, f)}); err != nil || n != 3 {
		t.Fatalf("ImportFrames after reopening = %d, %v", n, err)
	}
	checkAll(t, s, []castore.Digest{f.chunks[0].Digest, f.chunks[1].Digest, f.chunks[2].Digest}, chunks)
	checkStoredBytes(t, s)
}
