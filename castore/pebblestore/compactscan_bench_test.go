package pebblestore

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// BenchmarkCompactChunks times compactChunks, the scan of the chunk index
// a compaction starts with, on a store of one million chunks in frames of
// which one frame's 64 chunks are the compaction's sources: what a small
// incremental compaction of a large store pays.
func BenchmarkCompactChunks(b *testing.B) {
	ctx := context.Background()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const chunks, perFrame = 1 << 20, 64
	var frame castore.Digest
	source := &frameInfo{}
	batch := s.db.newBatch()
	for i := range chunks {
		if i%perFrame == 0 {
			frame = castore.Hash(binary.AppendUvarint(nil, uint64(i)))
		}
		d := castore.Hash(binary.AppendUvarint([]byte("chunk"), uint64(i)))
		ref := frameRef{frame: frame, offset: uint32(i%perFrame) << 16, length: 1 << 16}
		batch.set(pebbleKey(pebbleKindChunk, d), ref.encode(nil))
		if i < perFrame {
			source.name = frame
		}
		if batch.size() > 4<<20 || i == chunks-1 {
			if err := batch.commit(ctx, false); err != nil {
				b.Fatal(err)
			}
			batch = s.db.newBatch()
		}
	}
	batch.close()
	sources := &compactSet{byName: map[castore.Digest]*frameInfo{source.name: source}}
	b.ResetTimer()
	for b.Loop() {
		found, err := s.compactChunks(ctx, s.db, sources)
		if err != nil {
			b.Fatal(err)
		}
		if len(found) != perFrame {
			b.Fatalf("found %d chunks to rewrite, want %d", len(found), perFrame)
		}
	}
}
