package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/nixcas/nixcas/castore"
)

// TestLayoutVersion1 opens a store of layout version 1 (every chunk
// inline, no frames): read-only it reads as it is; a writable open
// upgrades the version, reads the old chunks transparently and packs new
// ones; compaction moves the old ones into frames. A newer version is
// refused.
func TestLayoutVersion1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{CacheSize: 8 << 20, MemTableSize: 16 << 20, Frames: FrameOptions{Off: true}}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var old [][]byte
	for i := range 20 {
		c := bytes.Repeat([]byte(fmt.Sprintf("old chunk %d ", i)), 2000)
		old = append(old, c)
		if _, err := s.PutChunk(ctx, castore.NewChunk(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setVersion := func(v uint64) {
		t.Helper()
		db, err := pebble.Open(dir, &pebble.Options{Merger: pebbleCounterMerger, FormatMajorVersion: pebble.FormatValueSeparation, Logger: pebbleLogger})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Set(pebbleVersionKey, binary.AppendUvarint(nil, v), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	readVersion := func() uint64 {
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
		got, _ := binary.Uvarint(v)
		return got
	}
	check := func(s *Store, chunks [][]byte) {
		t.Helper()
		for _, c := range chunks {
			got, err := s.GetChunk(ctx, castore.Hash(c), nil)
			if err != nil || !bytes.Equal(got, c) {
				t.Fatalf("GetChunk: %d bytes, %v", len(got), err)
			}
		}
	}

	setVersion(pebbleLayoutVersion + 1)
	if _, err := OpenReadOnly(dir, Options{}); err == nil {
		t.Fatal("a store of a newer layout version opened")
	}
	setVersion(1)
	ro, err := OpenReadOnly(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(ro, old)
	ro.Close()
	if v := readVersion(); v != 1 {
		t.Fatalf("a read-only open changed the layout version to %d", v)
	}

	s, err = Open(dir, Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, old)
	fresh := [][]byte{bytes.Repeat([]byte("a new chunk "), 3000)}
	if _, err := s.PutChunk(ctx, castore.NewChunk(fresh[0])); err != nil {
		t.Fatal(err)
	}
	res, err := s.Compact(ctx, CompactOptions{})
	if err != nil || res.InlineChunks != len(old) {
		t.Fatalf("Compact = %+v, %v; want the %d old chunks moved", res, err, len(old))
	}
	check(s, old)
	check(s, fresh)
	s.Close()
	if v := readVersion(); v != pebbleLayoutVersion {
		t.Fatalf("layout version after a writable open = %d, want %d", v, pebbleLayoutVersion)
	}
}
