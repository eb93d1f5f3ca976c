package pebblestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nixcas/nixcas/castore"
)

// TestFrameCacheHeldFramesKeepTheirBytes: readers hold frames while the
// cache, a few frames big, evicts them under many readers, and every
// evicted buffer is given to the next frame loaded. A held frame must keep
// its bytes until released: a buffer reused while a reader still held it
// shows up as another frame's bytes.
func TestFrameCacheHeldFramesKeepTheirBytes(t *testing.T) {
	const (
		frameBytes = 256 << 10
		frames     = 32
		readers    = 8
		reads      = 400
	)
	c := newFrameCache(3 * frameBytes)
	var loads, recycled atomic.Int64
	load := func(i byte) func() ([]byte, error) {
		return func() ([]byte, error) {
			loads.Add(1)
			b := decodedFrameBuffers.Get(frameBytes)
			if cap(b) > 0 && len(b[:1]) == 1 && b[:1][0] != 0 {
				recycled.Add(1)
			}
			for range frameBytes {
				b = append(b, i)
			}
			return b, nil
		}
	}
	name := func(i byte) castore.Digest { return castore.Hash([]byte{i}) }
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range reads {
				i := byte((r*7 + k*3) % frames)
				e, _, err := c.acquire(context.Background(), name(i), load(i+1))
				if err != nil {
					errs <- err
					return
				}
				for pass := range 2 {
					for _, b := range e.data {
						if b != i+1 {
							errs <- errors.New("a held frame's bytes changed: its buffer was reused while held")
							return
						}
					}
					if pass == 0 && k%3 == 0 {
						// Another hold, given up before this one.
						c.hold(e)
						c.release(e)
					}
				}
				c.release(e)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if loads.Load() <= frames {
		t.Fatalf("%d loads of %d frames in a cache of 3: nothing was evicted, the test shows nothing", loads.Load(), frames)
	}
	if recycled.Load() == 0 {
		t.Fatalf("%d loads, none into a recycled buffer: evicted frames' buffers were not given back", loads.Load())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.refs != 1 {
			t.Errorf("frame %s cached with %d holders once every reader released it, want 1 (the cache)", frameName(e.name), e.refs)
		}
	}
}
