package castore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// gatedStore is a MemoryStore that asks Writers for want puts at once
// (castore.WriteConcurrency) and holds each put until want are in
// progress together, or until a generous timeout against a hang.
type gatedStore struct {
	castore.MemoryStore
	want int

	mu       sync.Mutex
	inFlight int
	reached  chan struct{} // closed once want puts were in progress at once
	timedOut bool          // or closed by a put that waited too long
}

func (g *gatedStore) WriteConcurrency() int { return g.want }

func (g *gatedStore) enter() {
	g.mu.Lock()
	g.inFlight++
	if g.inFlight >= g.want {
		g.release()
	}
	g.mu.Unlock()
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		g.mu.Lock()
		g.timedOut = true
		g.release()
		g.mu.Unlock()
	}
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
}

// release lets every put go on; the caller holds mu.
func (g *gatedStore) release() {
	select {
	case <-g.reached:
	default:
		close(g.reached)
	}
}

func (g *gatedStore) PutChunk(ctx context.Context, c castore.Chunk) (bool, error) {
	g.enter()
	return g.MemoryStore.PutChunk(ctx, c)
}

// wrapped hides a store behind a castore.Wrapper, as a counting or
// read-through decorator would.
type wrapped struct{ castore.Store }

func (w wrapped) Unwrap() any { return w.Store }

// TestWriterWriteConcurrency: a Writer on a store that asks for more puts
// at once than there are cores runs that many, through a wrapper too, and
// records every blob at Flush. Should it run fewer, the puts wait for the
// timeout and the test reports it.
func TestWriterWriteConcurrency(t *testing.T) {
	ctx := context.Background()
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("wrapped=%v", wrap), func(t *testing.T) {
			g := &gatedStore{want: 8, reached: make(chan struct{})}
			var s castore.Store = g
			if wrap {
				s = wrapped{g}
			}
			w, err := castore.NewWriter(s, castore.WriterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			rng := rand.New(rand.NewPCG(1, 2))
			var blobs [][]byte
			var digests []castore.Digest
			for i := range 40 {
				data := make([]byte, 1000+i*37)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				d, _, err := w.WriteBlob(ctx, bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				blobs, digests = append(blobs, data), append(digests, d)
			}
			if err := w.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			g.mu.Lock()
			timedOut := g.timedOut
			g.mu.Unlock()
			if timedOut {
				t.Fatalf("never %d puts at once", g.want)
			}
			for i, d := range digests {
				if d != castore.Hash(blobs[i]) {
					t.Fatalf("blob %d: digest %s, want %s", i, d, castore.Hash(blobs[i]))
				}
				if ok, err := g.HasChunk(ctx, d); err != nil || !ok {
					t.Fatalf("blob %d not stored: %v %v", i, ok, err)
				}
			}
		})
	}
}
