package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// placeStore returns a writable store with n chunks packed into several
// small hot frames, the chunks and their digests.
func placeStore(t *testing.T, n int) (*Store, [][]byte, []castore.Digest) {
	t.Helper()
	s, err := Open(t.TempDir(), Options{
		CacheSize:    8 << 20,
		MemTableSize: 16 << 20,
		Frames:       FrameOptions{Size: 64 << 10, CacheSize: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	var chunks [][]byte
	var ds []castore.Digest
	for i := range n {
		var b bytes.Buffer
		for line := 0; b.Len() < 12<<10; line++ {
			fmt.Fprintf(&b, "chunk %d line %d %d\n", i, line, line*i%97)
		}
		c := castore.NewChunk(b.Bytes())
		if _, err := s.PutChunk(ctx, c); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, b.Bytes())
		ds = append(ds, c.Digest())
	}
	if err := s.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	return s, chunks, ds
}

// readAll reads every chunk and fails unless each is exact.
func readAll(t *testing.T, s *Store, chunks [][]byte, ds []castore.Digest) {
	t.Helper()
	for i, d := range ds {
		got, err := s.GetChunk(context.Background(), d, nil)
		if err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d (%s): %d bytes, %v; want its %d bytes", i, d, len(got), err, len(chunks[i]))
		}
	}
}

// registeredFrames returns the names of the frames the registry holds.
func registeredFrames(t *testing.T, s *Store) map[castore.Digest]bool {
	t.Helper()
	frames := map[castore.Digest]bool{}
	err := s.objects.ListObjects(context.Background(), func(name string, _ int64) error {
		if d, ok := parseFrameName(name); ok {
			frames[d] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

// checkPlaces fails unless every remembered place is in a frame that
// exists and matches the index.
func checkPlaces(t *testing.T, s *Store) {
	t.Helper()
	frames := registeredFrames(t, s)
	s.places.mu.RLock()
	defer s.places.mu.RUnlock()
	for d, r := range s.places.places {
		if !frames[r.frame] {
			t.Errorf("chunk %s remembered in frame %s, which is gone", d, frameName(r.frame))
		}
		p, err := s.ChunkPlace(context.Background(), d)
		if err != nil || p.Frame != r.frame || p.Offset != r.offset || p.Length != r.length {
			t.Errorf("chunk %s remembered at %+v; the index says %+v, %v", d, r, p, err)
		}
	}
}

// TestPlacesRemembered: a chunk read from a frame is remembered where it
// is; a compaction forgets every place, and reads after it are exact and
// remember the new places, never a retired frame's.
func TestPlacesRemembered(t *testing.T) {
	ctx := context.Background()
	s, chunks, ds := placeStore(t, 40)
	readAll(t, s, chunks, ds)
	if n := s.places.len(); n != len(ds) {
		t.Fatalf("%d places remembered after reading %d chunks", n, len(ds))
	}
	checkPlaces(t, s)
	old := registeredFrames(t, s)

	res, err := s.Compact(ctx, CompactOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.FramesDeleted == 0 {
		t.Fatalf("compaction %+v retired no frame", res)
	}
	if n := s.places.len(); n != 0 {
		t.Fatalf("%d places remembered after a compaction retired %d frames", n, res.FramesDeleted)
	}
	readAll(t, s, chunks, ds)
	if n := s.places.len(); n != len(ds) {
		t.Fatalf("%d places remembered after reading %d chunks again", n, len(ds))
	}
	checkPlaces(t, s)
	for _, d := range ds {
		if r, _ := s.places.lookup(d); old[r.frame] {
			t.Fatalf("chunk %s remembered in retired frame %s", d, frameName(r.frame))
		}
	}
}

// TestPlacesStale: a place that is wrong (its frame gone) is not used: the
// read asks the index again, gives the chunk's bytes and remembers the
// right place. A remembered place whose bytes do not match its length is
// not served either.
func TestPlacesStale(t *testing.T) {
	s, chunks, ds := placeStore(t, 12)
	readAll(t, s, chunks, ds)
	gone := castore.Hash([]byte("no such frame"))
	for _, d := range ds {
		s.places.add(d, frameRef{frame: gone, offset: 0, length: 100}, s.places.generation())
	}
	readAll(t, s, chunks, ds)
	checkPlaces(t, s)

	// The right frame, the wrong offset: out of the frame's bounds.
	r, _ := s.places.lookup(ds[0])
	s.places.add(ds[0], frameRef{frame: r.frame, offset: MaxFrameSize - 10, length: r.length}, s.places.generation())
	readAll(t, s, chunks, ds)
	checkPlaces(t, s)
}

// TestPlacesDeleted: a chunk deleted is not found, though its place was
// remembered and its frame still holds its bytes; a collection that
// deletes chunks forgets every place.
func TestPlacesDeleted(t *testing.T) {
	ctx := context.Background()
	s, chunks, ds := placeStore(t, 12)
	readAll(t, s, chunks, ds)
	if ok, err := s.DeleteChunk(ctx, ds[3]); !ok || err != nil {
		t.Fatalf("DeleteChunk = %v, %v", ok, err)
	}
	if _, err := s.GetChunk(ctx, ds[3], nil); !errors.Is(err, castore.ErrNotFound) {
		t.Fatalf("GetChunk of a deleted chunk: %v, want ErrNotFound", err)
	}
	if _, ok := s.places.lookup(ds[3]); ok {
		t.Fatal("a deleted chunk's place is remembered")
	}

	noRoots := func(context.Context, func(string, castore.Entry) error) error { return nil }
	res, err := s.GC(ctx, GCOptions{Roots: noRoots})
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksDeleted == 0 || s.places.len() != 0 {
		t.Fatalf("collection %+v; %d places remembered after it", res, s.places.len())
	}
	for _, d := range ds {
		if _, err := s.GetChunk(ctx, d, nil); !errors.Is(err, castore.ErrNotFound) {
			t.Fatalf("GetChunk of a collected chunk: %v, want ErrNotFound", err)
		}
	}
}

// TestPlacesCompactionRacing: readers read every chunk over and over
// while compactions retire the frames under them; every read is exact,
// and no place remembered at the end names a retired frame.
func TestPlacesCompactionRacing(t *testing.T) {
	ctx := context.Background()
	s, chunks, ds := placeStore(t, 40)
	readAll(t, s, chunks, ds)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i, d := range ds {
					got, err := s.GetChunk(ctx, d, nil)
					if err != nil || !bytes.Equal(got, chunks[i]) {
						errs <- fmt.Errorf("chunk %d during compactions: %d bytes, %v", i, len(got), err)
						return
					}
				}
			}
		}()
	}
	for range 6 {
		if _, err := s.Compact(ctx, CompactOptions{Full: true, FrameSize: 128 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkPlaces(t, s)
	readAll(t, s, chunks, ds)
	checkPlaces(t, s)
}

// TestChunkFilesBound: a ChunkFiles keeps at most maxChunkFiles files
// open, closing the one opened first; each chunk it finds is at the
// offset it names, byte for byte.
func TestChunkFilesBound(t *testing.T) {
	ctx := context.Background()
	s, chunks, ds := placeStore(t, 40)
	readAll(t, s, chunks, ds)
	frames := registeredFrames(t, s)
	for deadline := time.Now().Add(30 * time.Second); s.DecodedCacheStats().Files < len(frames); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("decoded files: %+v; want one for each of %d frames", s.DecodedCacheStats(), len(frames))
		}
	}
	defer func(n int) { maxChunkFiles = n }(maxChunkFiles)
	maxChunkFiles = 2
	cf := s.ChunkFiles().(*chunkFiles)
	defer cf.Close()
	var opened []*os.File
	for i, d := range ds {
		f, off, ok := cf.ChunkFile(ctx, d, uint32(len(chunks[i])))
		if !ok {
			t.Fatalf("chunk %d: not found in a decoded file", i)
		}
		got := make([]byte, len(chunks[i]))
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d at %d of its file: %v, or the bytes differ", i, off, err)
		}
		if len(opened) == 0 || opened[len(opened)-1] != f {
			opened = append(opened, f)
		}
		if len(cf.files) > 2 {
			t.Fatalf("%d files open, want at most 2", len(cf.files))
		}
	}
	if len(opened) < 3 {
		t.Fatalf("chunks in %d files; want several", len(opened))
	}
	if _, err := opened[0].Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("the file opened first is still open (%v)", err)
	}
	if _, _, ok := cf.ChunkFile(ctx, ds[0], uint32(len(chunks[0])+1)); ok {
		t.Fatal("a chunk asked for with the wrong size was found")
	}
}

// chunkGets counts the look-ups of chunk index records.
type chunkGets struct {
	kvDB
	n atomic.Int64 // chunk records read, by any goroutine
}

func (c *chunkGets) get(ctx context.Context, key []byte, fn func(v []byte) error) error {
	if len(key) > 0 && key[0] == pebbleKindChunk {
		c.n.Add(1)
	}
	return c.kvDB.get(ctx, key, fn)
}

// TestPlacesHandedOff: in a store that only hands places on (records in
// PostgreSQL), a chunk that ChunkFiles looked up and found no decoded
// file for is read by GetChunk without a second look-up; without the
// hand-off it is looked up twice. A place handed on that is wrong by the
// time it is taken (its frame gone) is looked up again, and the read is
// exact.
func TestPlacesHandedOff(t *testing.T) {
	ctx := context.Background()
	for _, handoff := range []bool{true, false} {
		t.Run(fmt.Sprintf("handoff=%v", handoff), func(t *testing.T) {
			s, chunks, ds := placeStore(t, 20)
			// The packer may still run: swap under the store's lock.
			s.mu.Lock()
			s.places = nil
			if handoff {
				s.places = newPlaceHandoff(placeHandoffEntries)
			}
			gets := &chunkGets{kvDB: s.db}
			s.db = gets
			s.mu.Unlock()
			files := s.ChunkFiles()
			defer files.Close()
			twice := 0
			for i, d := range ds {
				before := gets.n.Load()
				if _, _, ok := files.ChunkFile(ctx, d, uint32(len(chunks[i]))); ok {
					continue // its frame's decoded file was written meanwhile
				}
				got, err := s.GetChunk(ctx, d, nil)
				if err != nil || !bytes.Equal(got, chunks[i]) {
					t.Fatalf("chunk %d: %d bytes, %v", i, len(got), err)
				}
				if gets.n.Load()-before == 2 {
					twice++
				}
			}
			switch {
			case handoff && twice != 0:
				t.Fatalf("%d chunks looked up twice with the hand-off", twice)
			case !handoff && twice == 0:
				t.Fatalf("no chunk looked up twice without the hand-off: the test shows nothing")
			}
			if !handoff {
				return
			}
			// A place wrong by the time it is taken.
			gen := s.places.generation()
			s.places.handOff(ds[0], frameRef{frame: castore.Hash([]byte("no such frame")), length: uint32(len(chunks[0]))}, gen)
			got, err := s.GetChunk(ctx, ds[0], nil)
			if err != nil || !bytes.Equal(got, chunks[0]) {
				t.Fatalf("chunk 0 after a stale place was handed on: %d bytes, %v", len(got), err)
			}
			if _, ok := s.places.take(ds[0]); ok {
				t.Fatalf("a place handed on was left after it was taken")
			}
		})
	}
}
