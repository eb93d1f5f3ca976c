package pebblestore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// TestFrameSource: chunks in frames are placed exactly (their bytes at
// their offset in the decoded frame), frames come as stored and hash to
// their names; a chunk not yet packed is in no frame; a retired frame is
// ErrNotFound; a damaged one ErrCorrupt naming it.
func TestFrameSource(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openFramed(t, dir)
	src, ok := castore.As[castore.FrameSource](s)
	if !ok {
		t.Fatal("pebblestore.Store is no castore.FrameSource")
	}
	chunks := versionedChunks(1, 12)
	ds := putAll(t, s, chunks)
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	late := []byte("a chunk stored after packing, less than a frame's worth")
	lateD := putAll(t, s, [][]byte{late})[0]

	check := func(ds []castore.Digest, chunks [][]byte) map[castore.Digest]bool {
		t.Helper()
		frames := map[castore.Digest]bool{}
		dec, _ := zstd.NewReader(nil)
		defer dec.Close()
		for i, d := range ds {
			fc, err := src.ChunkPlace(ctx, d)
			if err != nil || !fc.Framed {
				t.Fatalf("ChunkPlace(chunk %d) = %+v, %v; want a frame", i, fc, err)
			}
			m, err := src.FrameMeta(ctx, fc.Frame)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := src.GetFrame(ctx, fc.Frame, []byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			if string(obj[:6]) != "prefix" || castore.Hash(obj[6:]) != fc.Frame || uint64(len(obj)-6) != m.StoredSize {
				t.Fatalf("GetFrame(%s): %d bytes, meta %+v", fc.Frame, len(obj), m)
			}
			data, err := dec.DecodeAll(obj[6:], nil)
			if err != nil || uint64(len(data)) != m.DecodedSize {
				t.Fatalf("frame %s decodes to %d bytes (%v), meta %+v", fc.Frame, len(data), err, m)
			}
			if got := data[fc.Offset : fc.Offset+fc.Length]; !bytes.Equal(got, chunks[i]) {
				t.Fatalf("chunk %d at %d+%d of frame %s differs", i, fc.Offset, fc.Length, fc.Frame)
			}
			frames[fc.Frame] = true
		}
		return frames
	}
	hot := check(ds, chunks)
	if len(hot) < 2 {
		t.Fatalf("%d frames: want several", len(hot))
	}
	if p, err := src.ChunkPlace(ctx, lateD); err != nil || p.Framed {
		t.Fatalf("ChunkPlace(a chunk not packed) = %+v, %v; want none", p, err)
	}
	var missing castore.Digest
	if _, err := src.ChunkPlace(ctx, missing); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("ChunkPlace(missing chunk) = %v; want ErrNotFound", err)
	}
	if _, err := src.GetFrame(ctx, ds[0], nil); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("GetFrame(a chunk's digest) = %v; want ErrNotFound", err)
	}

	// Compaction retires the hot frames.
	if _, err := s.Compact(ctx, pebblestore.CompactOptions{FrameSize: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	for f := range hot {
		if _, err := src.GetFrame(ctx, f, nil); !errors.Is(err, castore.ErrNotFound) {
			t.Fatalf("GetFrame(retired frame) = %v; want ErrNotFound", err)
		}
		if _, err := src.FrameMeta(ctx, f); !errors.Is(err, castore.ErrNotFound) {
			t.Fatalf("FrameMeta(retired frame) = %v; want ErrNotFound", err)
		}
	}
	cold := check(append(ds, lateD), append(chunks, late))

	// Damaged on disk.
	files, _ := frameFiles(t, dir)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x10
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for f := range cold {
		_, err := src.GetFrame(ctx, f, nil)
		if !errors.Is(err, castore.ErrCorrupt) || !strings.Contains(err.Error(), f.String()) {
			t.Fatalf("GetFrame(damaged frame) = %v; want ErrCorrupt naming %s", err, f)
		}
	}
}
