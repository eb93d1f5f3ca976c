package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/nixcas/nixcas/castore"
)

// setLayoutVersion writes v as the layout version of the closed store in
// dir, as another binary would have.
func setLayoutVersion(t *testing.T, dir string, v []byte) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Merger: pebbleCounterMerger, FormatMajorVersion: pebble.FormatValueSeparation, Logger: pebbleLogger})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(pebbleVersionKey, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// layoutVersion reads the layout version of the closed store in dir.
func layoutVersion(t *testing.T, dir string) uint64 {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Merger: pebbleCounterMerger, FormatMajorVersion: pebble.FormatValueSeparation, Logger: pebbleLogger, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, closer, err := db.Get(pebbleVersionKey)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	got, n := binary.Uvarint(v)
	if n != len(v) {
		t.Fatalf("layout version record %x", v)
	}
	return got
}

// TestLayoutVersionRuns: a store that writes no filtered frame stays at
// layout 2 (which binaries that know only 2 open) through ingest and full
// compactions, and is raised to 3 by the first incremental compaction, before it writes a record of a
// run (a copy of it is at 3 too); a store of a version above this binary's is refused, read-only or
// not, by an error naming both versions; a version record that is not a
// version is corrupt.
func TestLayoutVersionRuns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: FrameOptions{NoCallFilter: true}}
	var chunks [][]byte
	put := func(s *Store, n int) {
		t.Helper()
		for range n {
			c := bytes.Repeat([]byte(fmt.Sprintf("chunk %d ", len(chunks))), 2000)
			chunks = append(chunks, c)
			if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
				t.Fatal(err)
			}
		}
	}
	reopen := func(want uint64) *Store {
		t.Helper()
		if v := layoutVersion(t, dir); v != want {
			t.Fatalf("layout version %d, want %d", v, want)
		}
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			if got, err := s.GetChunk(ctx, castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
				t.Fatalf("GetChunk: %d bytes, %v", len(got), err)
			}
		}
		return s
	}

	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	put(s, 10)
	s.Close()
	s = reopen(layoutFrames)
	if _, err := s.Compact(ctx, CompactOptions{Full: true}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = reopen(layoutFrames)
	put(s, 10)
	res, err := s.Compact(ctx, CompactOptions{})
	if err != nil || res.Into == nil || res.Into.Level != 0 || res.FramesOut == 0 {
		t.Fatalf("Compact = %+v, %v; want a run of level 0", res, err)
	}
	s.Close()
	s = reopen(layoutRuns)
	// A copy carries the records of runs, so it takes the version too.
	copyDir := t.TempDir()
	dst, err := Open(copyDir, Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: FrameOptions{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CopyStore(ctx, dst, s, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	s.Close()
	if v := layoutVersion(t, copyDir); v != layoutRuns {
		t.Fatalf("layout version of a copy of a store with runs = %d, want %d", v, layoutRuns)
	}

	cases := []struct {
		name    string
		version []byte
		want    error
		message string
	}{
		{"newer", binary.AppendUvarint(nil, pebbleLayoutVersion+1), castore.ErrInvalid,
			fmt.Sprintf("store layout version %d is newer than this binary (%d)", pebbleLayoutVersion+1, pebbleLayoutVersion)},
		{"much newer", binary.AppendUvarint(nil, 1000), castore.ErrInvalid,
			fmt.Sprintf("store layout version 1000 is newer than this binary (%d)", pebbleLayoutVersion)},
		{"zero", []byte{0}, castore.ErrCorrupt, "layout version record 00 is not a version"},
		{"truncated", []byte{0x80}, castore.ErrCorrupt, "layout version record 80 is not a version"},
		{"trailing bytes", []byte{3, 0}, castore.ErrCorrupt, "layout version record 0300 is not a version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			setLayoutVersion(t, dir, tc.version)
			for _, open := range []struct {
				name string
				fn   func(string, Options) (*Store, error)
			}{{"Open", Open}, {"OpenReadOnly", OpenReadOnly}} {
				s, err := open.fn(dir, opts)
				if err == nil {
					s.Close()
					t.Fatalf("%s opened a store of layout version record %x", open.name, tc.version)
				}
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.message) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("%s: %v; want %v naming %s and saying %q", open.name, err, tc.want, dir, tc.message)
				}
			}
		})
	}
	setLayoutVersion(t, dir, binary.AppendUvarint(nil, layoutRuns))
	reopen(layoutRuns).Close()
}

// TestLayoutVersionFiltered: the first filtered frame raises the layout to
// 4 before it is registered, whether packed, compacted or imported; the
// store reads back the same chunks after a reopen.
func TestLayoutVersionFiltered(t *testing.T) {
	ctx := context.Background()
	opts := Options{CacheSize: 8 << 20, MemTableSize: 16 << 20}
	chunk := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("chunk %d \xe8\x10\x00\x00\x00", i)), 2000) }
	for _, how := range []string{"pack", "compact", "import"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			o := opts
			o.Frames.NoCallFilter = how != "pack"
			s, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			var chunks [][]byte
			for i := range 10 {
				chunks = append(chunks, chunk(i))
				if _, err := s.PutChunk(ctx, castore.NewChunk(chunks[i])); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.PackPending(ctx); err != nil {
				t.Fatal(err)
			}
			s.Close()
			want := uint64(layoutFrames)
			if how == "pack" {
				want = layoutFiltered
			}
			if v := layoutVersion(t, dir); v != want {
				t.Fatalf("after packing: layout version %d, want %d", v, want)
			}
			o.Frames.NoCallFilter = false
			if s, err = Open(dir, o); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "compact":
				if _, err := s.Compact(ctx, CompactOptions{Full: true}); err != nil {
					t.Fatal(err)
				}
			case "import":
				// A frame written filtered elsewhere, imported.
				data := bytes.Join([][]byte{chunk(100), chunk(101)}, nil)
				obj := compressFrame(DefaultFrameOptions.Level, data, true)
				name := castore.Hash(obj)
				n := len(chunk(100))
				vf, err := VerifyFrame(name, obj, []FrameChunk{
					{Digest: castore.Hash(chunk(100)), Offset: 0, Length: uint32(n)},
					{Digest: castore.Hash(chunk(101)), Offset: uint32(n), Length: uint32(n)},
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.ImportFrames(ctx, []*VerifiedFrame{vf}); err != nil {
					t.Fatal(err)
				}
				chunks = append(chunks, chunk(100), chunk(101))
			}
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if v := layoutVersion(t, dir); v != layoutFiltered {
				t.Fatalf("layout version %d, want %d", v, layoutFiltered)
			}
			if s, err = Open(dir, o); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, c := range chunks {
				if got, err := s.GetChunk(ctx, castore.Hash(c), nil); err != nil || !bytes.Equal(got, c) {
					t.Fatalf("GetChunk: %d bytes, %v", len(got), err)
				}
			}
		})
	}
}
