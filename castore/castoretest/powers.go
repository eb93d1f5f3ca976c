package castoretest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// testPutEncodedWrongDigest puts chunks in their stored form under the
// wrong digest, and in forms that do not decode: each put fails with
// ErrCorrupt and stores nothing (restic's TestSaveWrongHash).
func testPutEncodedWrongDigest(t *testing.T, s castore.Store) {
	ctx := context.Background()
	data := CompressibleBytes(32 << 10)
	var enc castore.ChunkEncoder
	stored := enc.Encode(nil, data)
	raw := append([]byte{castore.CodecRaw}, data...)
	wrong := castore.Hash([]byte("another chunk"))
	truncated := stored[:len(stored)/2]
	tests := []struct {
		name   string
		d      castore.Digest
		stored []byte
	}{
		{"compressed, wrong digest", wrong, stored},
		{"raw, wrong digest", wrong, raw},
		{"compressed, truncated", castore.Hash(data), truncated},
		{"raw, one byte changed", castore.Hash(data), append(bytes.Clone(raw[:len(raw)-1]), raw[len(raw)-1]^1)},
		{"unknown codec", castore.Hash(data), append([]byte{0x7f}, data...)},
	}
	for _, tt := range tests {
		added, err := castore.PutEncoded(ctx, s, tt.d, tt.stored)
		if added || !errors.Is(err, castore.ErrCorrupt) && !errors.Is(err, castore.ErrInvalid) {
			t.Fatalf("%s: PutEncoded = %v, %v; want false, ErrCorrupt", tt.name, added, err)
		}
		MustHaveChunk(t, s, tt.d, false)
		MustHaveChunk(t, s, castore.Hash(data), false)
		wantStats(t, s, castore.Stats{})
	}
	// The right digest is stored, in either form.
	for _, form := range [][]byte{stored, raw} {
		if _, err := castore.PutEncoded(ctx, s, castore.Hash(data), form); err != nil {
			t.Fatalf("PutEncoded with the right digest: %v", err)
		}
		if got := MustGetChunk(t, s, castore.Hash(data)); !bytes.Equal(got, data) {
			t.Fatal("chunk put in its stored form reads back differently")
		}
	}
	if st := MustStats(t, s); st.Chunks != 1 || st.UniqueChunkBytes != uint64(len(data)) {
		t.Fatalf("Stats = %+v after putting one chunk twice", st)
	}
	// And reads back in a stored form that decodes to it.
	got, err := castore.GetEncoded(ctx, s, castore.Hash(data), nil)
	if err != nil {
		t.Fatalf("GetEncoded: %v", err)
	}
	if dec, err := castore.DecodeChunk(nil, got); err != nil || !bytes.Equal(dec, data) {
		t.Fatalf("GetEncoded's form decodes to %d bytes, %v", len(dec), err)
	}
}

// testDeleteChunk deletes a chunk twice: the first reports it was there,
// the second that it was not, neither fails; the counters follow.
func testDeleteChunk(t *testing.T, s castore.Store) {
	del, ok := castore.As[castore.ChunkDeleter](s)
	if !ok {
		t.Skip("the store cannot delete chunks")
	}
	ctx := context.Background()
	keep := MustPutChunk(t, s, RandomBytes(20, 3000))
	d := MustPutChunk(t, s, RandomBytes(21, 5000))
	before := MustStats(t, s)
	for i, want := range []bool{true, false} {
		got, err := del.DeleteChunk(ctx, d)
		if err != nil || got != want {
			t.Fatalf("DeleteChunk #%d = %v, %v; want %v, nil", i+1, got, err, want)
		}
	}
	MustHaveChunk(t, s, d, false)
	_, err := s.GetChunk(ctx, d, nil)
	wantErr(t, "GetChunk of a deleted chunk", err, castore.ErrNotFound)
	MustHaveChunk(t, s, keep, true)
	st := MustStats(t, s)
	if st.Chunks != before.Chunks-1 || st.UniqueChunkBytes != before.UniqueChunkBytes-5000 {
		t.Fatalf("Stats = %+v after deleting a chunk of 5000 bytes, before %+v", st, before)
	}
	// A deleted chunk can be put again.
	if added, err := s.PutChunk(ctx, castore.NewChunk(RandomBytes(21, 5000))); err != nil || !added {
		t.Fatalf("PutChunk after delete = %v, %v; want true, nil", added, err)
	}
}

// testScanChunksOrder lists chunks: every stored chunk once, with its
// size, in ascending digest order, whatever the order of the puts.
func testScanChunksOrder(t *testing.T, s castore.Store) {
	scan, ok := castore.As[castore.ChunkScanner](s)
	if !ok {
		t.Skip("the store cannot list chunks")
	}
	ctx := context.Background()
	want := map[castore.Digest]int{}
	for i := range 40 {
		b := RandomBytes(uint64(300+i), 100+i*37)
		want[MustPutChunk(t, s, b)] = len(b)
	}
	if p, ok := castore.As[castore.Packer](s); ok {
		if err := p.PackPending(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var got []castore.Digest
	err := scan.ScanChunks(ctx, func(d castore.Digest, size int) error {
		if want[d] != size {
			t.Errorf("ScanChunks: chunk %s of %d bytes, want %d", d, size, want[d])
		}
		got = append(got, d)
		return nil
	})
	if err != nil {
		t.Fatalf("ScanChunks: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ScanChunks listed %d chunks, want %d", len(got), len(want))
	}
	if !slices.IsSortedFunc(got, func(a, b castore.Digest) int { return bytes.Compare(a[:], b[:]) }) {
		t.Fatal("ScanChunks did not list chunks in digest order")
	}
	// fn's error stops the scan and is returned.
	stop := errors.New("stop")
	n := 0
	err = scan.ScanChunks(ctx, func(castore.Digest, int) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ScanChunks with fn failing: %v after %d calls, want stop after 1", err, n)
	}
}
