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

// pooled reports whether b's array is among the free buffers of
// decodedFrameBuffers.
func pooled(b []byte) bool {
	for _, f := range decodedFrameBuffers.Buffers() {
		if cap(f) > 0 && cap(b) > 0 && &f[:1][0] == &b[:1][0] {
			return true
		}
	}
	return false
}

// TestFrameCacheHolds follows each way a frame is held and let go: a
// frame's buffer goes back to the pool once, when the last holder of a
// frame out of the cache lets it go, and never while it is held.
func TestFrameCacheHolds(t *testing.T) {
	ctx := context.Background()
	const size = 64 << 10
	filled := func(b byte) func() ([]byte, error) {
		return func() ([]byte, error) {
			buf := decodedFrameBuffers.Get(size)
			for range size {
				buf = append(buf, b)
			}
			return buf, nil
		}
	}
	name := func(i byte) castore.Digest { return castore.Hash([]byte{'h', i}) }
	refs := func(c *frameCache, e *frameEntry) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return e.refs
	}
	// An empty pool, whatever ran before: one full (bufpool.MaxFree)
	// would keep no buffer given back.
	for free := decodedFrameBuffers.Buffers(); len(free) > 0; free = decodedFrameBuffers.Buffers() {
		decodedFrameBuffers.Get(cap(free[0]))
	}
	c := newFrameCache(2 * size)

	// Read, peeked, held once more: the cache keeps its own hold.
	a, loaded, err := c.acquire(ctx, name(1), filled(1))
	if err != nil || !loaded {
		t.Fatalf("acquire: loaded %v, %v", loaded, err)
	}
	p, ok := c.peek(name(1))
	if !ok || p != a {
		t.Fatal("peek does not find the frame acquired")
	}
	c.hold(a)
	if got := refs(c, a); got != 4 {
		t.Fatalf("%d holds after acquire, peek and hold, want 4 (with the cache's)", got)
	}
	c.release(a)
	c.release(p)
	c.release(a)
	if got := refs(c, a); got != 1 || pooled(a.data) {
		t.Fatalf("released by every reader: %d holds, pooled %v; want the cache's only, not pooled", got, pooled(a.data))
	}

	// Forgotten while a reader holds it: pooled when the reader lets go.
	a, _, err = c.acquire(ctx, name(1), filled(1))
	if err != nil {
		t.Fatal(err)
	}
	c.forget(name(1))
	if pooled(a.data) {
		t.Fatal("a frame forgotten while held went to the pool")
	}
	if _, ok := c.peek(name(1)); ok {
		t.Fatal("a forgotten frame is still cached")
	}
	c.release(a)
	if !pooled(a.data) {
		t.Fatal("a forgotten frame's buffer did not go to the pool once let go")
	}

	// Evicted while held: pooled when the reader lets go.
	b, _, err := c.acquire(ctx, name(2), filled(2))
	if err != nil {
		t.Fatal(err)
	}
	for i := byte(3); i < 6; i++ {
		e, _, err := c.acquire(ctx, name(i), filled(i))
		if err != nil {
			t.Fatal(err)
		}
		c.release(e)
	}
	if _, ok := c.peek(name(2)); ok {
		t.Fatal("frame 2 is still cached after three more in a cache of two")
	}
	if pooled(b.data) || b.data[0] != 2 || b.data[size-1] != 2 {
		t.Fatal("an evicted frame held by a reader went to the pool, or its bytes changed")
	}
	c.release(b)
	if !pooled(b.data) {
		t.Fatal("an evicted frame's buffer did not go to the pool once let go")
	}

	// Too large for the cache: held by its reader only.
	big := newFrameCache(size / 2)
	e, _, err := big.acquire(ctx, name(7), filled(7))
	if err != nil {
		t.Fatal(err)
	}
	if got := refs(big, e); got != 1 {
		t.Fatalf("a frame larger than the cache has %d holds, want its reader's only", got)
	}
	big.release(e)
	if !pooled(e.data) {
		t.Fatal("a frame larger than the cache did not go to the pool once let go")
	}

	// A load that fails: nothing cached, the next reader loads again.
	failed := errors.New("no such frame")
	if _, _, err := c.acquire(ctx, name(8), func() ([]byte, error) { return nil, failed }); !errors.Is(err, failed) {
		t.Fatalf("acquire of a frame whose load fails: %v", err)
	}
	if e, loaded, err := c.acquire(ctx, name(8), filled(8)); err != nil || !loaded {
		t.Fatalf("after a failed load: loaded %v, %v; want loaded again", loaded, err)
	} else {
		c.release(e)
	}

	// A reader that gives up waiting for a load lets go of the frame.
	unblock := make(chan struct{})
	loading := make(chan struct{})
	done := make(chan *frameEntry)
	go func() {
		e, _, _ := c.acquire(ctx, name(9), func() ([]byte, error) {
			close(loading)
			<-unblock
			return filled(9)()
		})
		done <- e
	}()
	<-loading
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := c.acquire(cancelled, name(9), filled(9)); !errors.Is(err, context.Canceled) {
		t.Fatalf("a reader whose context ends while the frame loads: %v", err)
	}
	close(unblock)
	e = <-done
	c.release(e)
	if got := refs(c, e); got != 1 {
		t.Fatalf("%d holds once the loader and the reader that gave up let go, want the cache's only", got)
	}

	// Released more often than held: a panic, not a buffer in two frames.
	defer func() {
		if recover() == nil {
			t.Fatal("a frame released more often than held did not panic")
		}
	}()
	c.release(e)
	c.release(e)
}
