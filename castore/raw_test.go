package castore_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// openPebble opens a small Pebble store in dir, closed when t ends.
func openPebble(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// plainStore hides the optional powers of the store it wraps.
type plainStore struct{ castore.Store }

func TestEncodedChunks(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) castore.Store
	}{
		{"memory", func(t *testing.T) castore.Store { return new(castore.MemoryStore) }},
		{"pebble", func(t *testing.T) castore.Store { return openPebble(t, t.TempDir()) }},
		{"without the power", func(t *testing.T) castore.Store { return plainStore{new(castore.MemoryStore)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testEncodedChunks(t, tc.open(t), tc.open(t))
		})
	}
}

// testEncodedChunks moves chunks from src to dst in their stored form.
func testEncodedChunks(t *testing.T, src, dst castore.Store) {
	ctx := context.Background()
	for _, data := range [][]byte{nil, []byte("x"), castoretest.CompressibleBytes(100 << 10), castoretest.RandomBytes(1, 100<<10)} {
		d := castoretest.MustPutChunk(t, src, data)
		stored, err := castore.GetEncoded(ctx, src, d, []byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(stored, []byte("prefix")) {
			t.Fatalf("GetEncoded did not append to dst")
		}
		stored = stored[len("prefix"):]
		if added, err := castore.PutEncoded(ctx, dst, d, stored); err != nil || !added {
			t.Fatalf("PutEncoded of a %d-byte chunk = %v, %v", len(data), added, err)
		}
		if added, err := castore.PutEncoded(ctx, dst, d, stored); err != nil || added {
			t.Fatalf("second PutEncoded = %v, %v; want not added", added, err)
		}
		if got := castoretest.MustGetChunk(t, dst, d); !bytes.Equal(got, data) {
			t.Fatalf("chunk %s read back differs", d)
		}
	}
	if s, d := castoretest.MustStats(t, src), castoretest.MustStats(t, dst); s.Chunks != d.Chunks || s.UniqueChunkBytes != d.UniqueChunkBytes {
		t.Errorf("stats after copying every chunk: source %+v, destination %+v", s, d)
	}
	if _, err := castore.GetEncoded(ctx, src, castore.Hash([]byte("absent")), nil); !errors.Is(err, castore.ErrNotFound) {
		t.Errorf("GetEncoded of a missing chunk: %v", err)
	}

	// Refused: bytes of another digest, undecodable forms, an unknown
	// codec. Nothing of them is stored.
	before := castoretest.MustStats(t, dst)
	other := castore.Hash([]byte("other"))
	var enc castore.ChunkEncoder
	for _, tc := range []struct {
		name   string
		stored []byte
	}{
		{"wrong digest", enc.Encode(nil, []byte("not other"))},
		{"wrong digest, lz4", enc.Encode(nil, castoretest.CompressibleBytes(10<<10))},
		{"empty", nil},
		{"unknown codec", []byte{9, 1, 2, 3}},
		{"truncated lz4", enc.Encode(nil, castoretest.CompressibleBytes(10<<10))[:20]},
	} {
		if _, err := castore.PutEncoded(ctx, dst, other, tc.stored); !errors.Is(err, castore.ErrCorrupt) {
			t.Errorf("%s: PutEncoded = %v, want ErrCorrupt", tc.name, err)
		}
		castoretest.MustHaveChunk(t, dst, other, false)
	}
	if after := castoretest.MustStats(t, dst); after != before {
		t.Errorf("refused chunks changed the stats: %+v, then %+v", before, after)
	}

	// Concurrent puts of the same chunk store and count it once.
	data := castoretest.RandomBytes(7, 50<<10)
	d := castore.Hash(data)
	stored := enc.Encode(nil, data)
	var wg sync.WaitGroup
	var mu sync.Mutex
	added := 0
	for range 16 {
		wg.Go(func() {
			ok, err := castore.PutEncoded(ctx, dst, d, stored)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				added++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if added != 1 {
		t.Errorf("16 concurrent puts of one chunk: %d added, want 1", added)
	}
	if got := castoretest.MustStats(t, dst).Chunks; got != before.Chunks+1 {
		t.Errorf("chunks after concurrent puts: %d, want %d", got, before.Chunks+1)
	}
}
