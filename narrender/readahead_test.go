package narrender_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/testtree"
	"github.com/nixcas/nixcas/narrender"
)

// countingChunks counts the chunk reads started.
type countingChunks struct {
	*castore.MemoryStore
	reads atomic.Int64
}

func (s *countingChunks) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	s.reads.Add(1)
	return s.MemoryStore.GetChunk(ctx, d, dst)
}

// TestRenderReadAhead: a render whose writer blocks reads ahead by the
// memory of the chunks it fetches, not by their count: far ahead among
// small files (so that later frames decode while one is decoded), no
// further than its 16 MiB budget of fetch buffers among large chunks.
func TestRenderReadAhead(t *testing.T) {
	small := testtree.Entries{}
	for i := range 3000 {
		small[fmt.Sprintf("f%04d", i)] = testtree.File(testtree.Random(uint64(i), 200))
	}
	for _, tc := range []struct {
		name     string
		tree     *testtree.Node
		min, max int64
	}{
		// 1024 parts ahead at most, beyond the 256 KiB batch the writer
		// gathered before it blocked (about 200 bytes of framing and 200
		// of contents a file); with 32 parts, as before, some 700 in all.
		{"3000 files of 200 bytes", testtree.Dir(small), 1024, 1024 + (256<<10)/400 + 16},
		// Chunks of 16 to 256 KiB (random bytes): 16 MiB of their fetch
		// buffers at most (max is set below from the chunks' sizes), plus
		// the batch being written and the chunk after it.
		{"one file of 48 MiB", testtree.Dir(testtree.Entries{"big": testtree.File(testtree.Random(1, 48<<20))}), 8, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nar bytes.Buffer
			if err := testtree.WriteNAR(&nar, tc.tree); err != nil {
				t.Fatal(err)
			}
			s := &countingChunks{MemoryStore: new(castore.MemoryStore)}
			res, err := narrender.Ingest(context.Background(), &nar, s, castore.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.max == 0 {
				tc.max = chunksWithinBudget(t, s.MemoryStore, res.Root, 16<<20) + 4
			}
			ctx, cancel := context.WithCancel(context.Background())
			blocked := make(chan struct{}, 1)
			done := make(chan error, 1)
			s.reads.Store(0)
			go func() { done <- narrender.Render(ctx, &stalledWriter{ctx: ctx, blocked: blocked}, s, res.Root) }()
			select {
			case <-blocked:
			case <-time.After(60 * time.Second):
				t.Fatal("the render did not start writing within 60 s")
			}
			// The reads ahead stop once the budget is spent (or the stall
			// is noticed): wait until the count holds still.
			last := int64(-1)
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
				n := s.reads.Load()
				if n == last {
					break
				}
				last = n
				time.Sleep(2 * narrender.StallAfter)
			}
			cancel()
			<-done
			t.Logf("%d chunk reads ahead of a blocked writer (%d to %d allowed)", last, tc.min, tc.max)
			if last < tc.min || last > tc.max {
				t.Errorf("%d chunk reads ahead of a blocked writer; want %d to %d", last, tc.min, tc.max)
			}
		})
	}
}

// chunksWithinBudget returns how many of the first chunks of the one file
// of directory root fit, by the fetch buffers they take, in budget bytes.
func chunksWithinBudget(t *testing.T, s *castore.MemoryStore, root castore.Entry, budget int64) int64 {
	t.Helper()
	dir, err := s.GetDirectory(context.Background(), root.Digest)
	if err != nil || len(dir.Files) != 1 {
		t.Fatalf("root directory: %v, %+v; want one file", err, dir)
	}
	chunks, err := castore.BlobChunks(context.Background(), s, dir.Files[0].Digest, dir.Files[0].Size)
	if err != nil {
		t.Fatal(err)
	}
	var n, held int64
	for _, c := range chunks {
		if held += castore.FetchBufferSize(c.Size); held > budget {
			break
		}
		n++
	}
	return n
}

// gatedChunks holds every chunk read until the read of opener starts, as
// the chunks of a frame being decoded wait for its decode.
type gatedChunks struct {
	*castore.MemoryStore
	opener castore.Digest
	gate   chan struct{}
	once   sync.Once
}

func (s *gatedChunks) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	if d == s.opener {
		s.once.Do(func() { close(s.gate) })
	} else {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
	return s.MemoryStore.GetChunk(ctx, d, dst)
}

// TestRenderWaitingChunksHoldUpNoOthers: the chunks of 300 small files
// (within the parts a render queues ahead) wait until the chunk of the
// file after them is read, as a frame's
// hundreds of small chunks wait for its decode while the next frame's
// first chunk should start the next decode on another core. The render
// gets there: a chunk waiting does not hold up the fetches behind it
// (with a fetcher for each chunk that may be in flight). With four
// fetchers a core, as renders had, it never reads the last chunk.
func TestRenderWaitingChunksHoldUpNoOthers(t *testing.T) {
	// Eight cores, whatever the machine: four fetchers a core, 32, would
	// not reach the last chunk (on 76 cores they would).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	const waiting = 300
	files := testtree.Entries{}
	for i := range waiting + 1 {
		files[fmt.Sprintf("f%04d", i)] = testtree.File(testtree.Random(uint64(i), 200))
	}
	var nar bytes.Buffer
	if err := testtree.WriteNAR(&nar, testtree.Dir(files)); err != nil {
		t.Fatal(err)
	}
	last, err := io.ReadAll(testtree.Random(waiting, 200).Open())
	if err != nil {
		t.Fatal(err)
	}
	s := &gatedChunks{MemoryStore: new(castore.MemoryStore), opener: castore.Hash(last), gate: make(chan struct{})}
	res, err := narrender.Ingest(context.Background(), bytes.NewReader(nar.Bytes()), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := narrender.Render(ctx, &out, s, res.Root); err != nil {
		t.Fatalf("render: %v (the last file's chunk was never read)", err)
	}
	if !bytes.Equal(out.Bytes(), nar.Bytes()) {
		t.Fatal("the NAR rendered differs from the one ingested")
	}
}
