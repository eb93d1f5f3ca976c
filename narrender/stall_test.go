package narrender_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
)

// fileNAR returns the NAR of one regular file holding data.
func fileNAR(data []byte) []byte {
	var b bytes.Buffer
	str := func(s []byte) {
		binary.Write(&b, binary.LittleEndian, uint64(len(s)))
		b.Write(s)
		b.Write(make([]byte, (8-len(s)%8)%8))
	}
	for _, s := range []string{"nix-archive-1", "(", "type", "regular", "contents"} {
		str([]byte(s))
	}
	str(data)
	str([]byte(")"))
	return b.Bytes()
}

// stalledWriter accepts nothing: its first write reports on blocked, then
// every write waits for ctx to end.
type stalledWriter struct {
	ctx     context.Context
	blocked chan<- struct{}
	once    sync.Once
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { w.blocked <- struct{}{} })
	<-w.ctx.Done()
	return 0, w.ctx.Err()
}

// heapBytes returns the live heap after a collection.
func heapBytes() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestStalledRenderMemory renders a NAR to writers that never accept a
// byte, as clients that stop reading: once stalled, each render must give
// back the chunks it fetched ahead and pin little memory.
func TestStalledRenderMemory(t *testing.T) {
	const (
		renders = 32
		// Each stalled render may keep its 256 KiB output batch and the
		// chunk being written; the shared buffer lists keep up to 56 MiB
		// of freed chunk buffers for reuse, which counts here too.
		maxPerRender = 2 << 20
	)
	s := &castore.MemoryStore{}
	data := make([]byte, 16<<20)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(data)
	res, err := narrender.Ingest(context.Background(), bytes.NewReader(fileNAR(data)), s, castore.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data = nil
	base := heapBytes()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	blocked := make(chan struct{}, renders)
	errs := make(chan error, renders)
	for range renders {
		go func() {
			errs <- narrender.Render(ctx, &stalledWriter{ctx: ctx, blocked: blocked}, s, res.Root)
		}()
	}
	guard := time.After(60 * time.Second)
	for range renders {
		select {
		case <-blocked:
		case <-guard:
			t.Fatal("renders did not all start writing within 60 s")
		}
	}
	// Poll until the stalled renders have let go of their read-ahead (the
	// stall is noticed after narrender.StallAfter).
	best := uint64(1 << 62)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if h := heapBytes(); h > base {
			best = min(best, (h-base)/renders)
		} else {
			best = 0
		}
		if best <= maxPerRender {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d stalled renders of a %d-byte NAR: %d bytes of heap each (at least, over the stall)", renders, len(fileNAR(nil))+16<<20, best)
	if best > maxPerRender {
		t.Errorf("a stalled render holds %d bytes of heap, want at most %d", best, maxPerRender)
	}
	cancel()
	for range renders {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("stalled render ended with %v, want context.Canceled", err)
		}
	}
}
