package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// frameImporter is the power of a cache that stores frames received whole
// as they came (pebblestore.Store.ImportFrames).
type frameImporter interface {
	ImportFrames(ctx context.Context, frames []*pebblestore.VerifiedFrame) (int, error)
}

var _ frameImporter = (*pebblestore.Store)(nil)

// Frames held by a pull (variables for tests).
var (
	// heldBudget: a stream that received a frame waits while the decoded
	// frames held exceed this.
	heldBudget int64 = 64 << 20
	// importBatch: decoded bytes of received frames gathered before they
	// are imported into the cache together, with one sync.
	importBatch int64 = 16 << 20
)

const (
	// heldStall: a stream that waited this long while a writer waited
	// for a chunk not fetched yet and no writer read a held chunk drops
	// imported frames (the writers then read their chunks back from the
	// cache) rather than wait longer: the frames held then wait for
	// files written later, and the chunk wanted may be the one the
	// waiting stream is to receive.
	heldStall = 100 * time.Millisecond
)

// heldFrames keeps the frames a pull received whole, verified and
// decoded, in memory, so that its files are written from them rather
// than read back from the cache, and imports them into the cache, as
// they came, in batches (a batch costs one sync: the frames must be
// durable before the cache's index points at them).
//
// A frame leaves memory once imported and once the writers have read
// each of its chunks as many times as the tree uses it (uses). A
// received chunk is thus, from then on, either held here or in the
// cache. Streams that receive frames faster than the writers write wait
// while more than heldBudget is held, so memory stays below heldBudget
// plus the frames not yet imported (a batch being gathered, and one
// being imported by each stream at most). Safe for concurrent use.
type heldFrames struct {
	imp frameImporter

	mu           sync.Mutex
	uses         map[castore.Digest]int // reads of each chunk still to come
	chunks       map[castore.Digest]heldChunk
	frames       []*heldFrame // in the order received
	pending      []*heldFrame // received, not yet being imported
	pendingBytes int64
	held         int64         // decoded bytes of frames
	reads        uint64        // chunks read from held frames so far
	waiting      int           // writers waiting for a chunk to arrive
	writersDone  bool          // no chunk will be read any more
	dropped      chan struct{} // closed (and replaced) when a frame leaves memory, or the writers are done
}

type heldFrame struct {
	vf       *pebblestore.VerifiedFrame
	live     int // chunks with reads still to come
	imported bool
}

// heldChunk is the i-th chunk of the frame f.
type heldChunk struct {
	f *heldFrame
	i int
}

// newHeldFrames returns the frames held for a pull into cache, whose
// writers read each chunk as many times as uses says, or nil when the
// cache cannot import frames (its chunks are then put one by one).
func newHeldFrames(cache castore.Store, uses map[castore.Digest]int) *heldFrames {
	imp, ok := castore.As[frameImporter](cache)
	if !ok {
		return nil
	}
	return &heldFrames{imp: imp, uses: uses, chunks: map[castore.Digest]heldChunk{}, dropped: make(chan struct{})}
}

// add holds the verified frame vf, its chunks readable with chunk at
// once, and imports the frames received so far when a batch's worth
// waits. It first waits while more than heldBudget is held.
func (h *heldFrames) add(ctx context.Context, vf *pebblestore.VerifiedFrame) error {
	if err := h.waitForRoom(ctx); err != nil {
		return err
	}
	f := &heldFrame{vf: vf}
	h.mu.Lock()
	for i, c := range vf.Chunks() {
		h.chunks[c.Digest] = heldChunk{f: f, i: i}
		if h.uses[c.Digest] > 0 {
			f.live++
		}
	}
	h.frames = append(h.frames, f)
	h.pending = append(h.pending, f)
	h.pendingBytes += int64(len(vf.Decoded()))
	h.held += int64(len(vf.Decoded()))
	var batch []*heldFrame
	if h.pendingBytes >= importBatch {
		batch, h.pending, h.pendingBytes = h.pending, nil, 0
	}
	h.mu.Unlock()
	return h.importFrames(ctx, batch)
}

// waitForRoom waits while more than heldBudget is held and the writers
// are at work. Should a writer wait for a chunk to arrive while none
// reads a held chunk for heldStall, it drops imported frames, oldest
// first, down to half the budget (so that the next frames do not wait
// again at once), and returns. (Writers merely slow, on a loaded
// machine, are waited for.)
func (h *heldFrames) waitForRoom(ctx context.Context) error {
	for {
		h.mu.Lock()
		if h.held <= heldBudget || h.writersDone {
			h.mu.Unlock()
			return nil
		}
		dropped, reads := h.dropped, h.reads
		h.mu.Unlock()
		select {
		case <-dropped:
			continue
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(heldStall):
		}
		h.mu.Lock()
		stalled := h.reads == reads && h.waiting > 0
		if stalled {
			h.dropFrames(func(f *heldFrame) bool { return h.held > heldBudget/2 })
		}
		h.mu.Unlock()
		if stalled {
			return nil
		}
	}
}

// waitingWriter counts a writer waiting for a chunk to arrive (delta 1)
// and done waiting (-1). A nil *heldFrames counts nothing.
func (h *heldFrames) waitingWriter(delta int) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.waiting += delta
	h.mu.Unlock()
}

// doneWriting says that the writers read no more chunks: streams no
// longer wait for them.
func (h *heldFrames) doneWriting() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.writersDone = true
	close(h.dropped)
	h.dropped = make(chan struct{})
}

// finish imports the frames not yet imported.
func (h *heldFrames) finish(ctx context.Context) error {
	h.mu.Lock()
	batch := h.pending
	h.pending, h.pendingBytes = nil, 0
	h.mu.Unlock()
	return h.importFrames(ctx, batch)
}

// importFrames imports batch into the cache, then drops the frames of
// the batch the writers are done with.
func (h *heldFrames) importFrames(ctx context.Context, batch []*heldFrame) error {
	if len(batch) == 0 {
		return nil
	}
	vfs := make([]*pebblestore.VerifiedFrame, len(batch))
	for i, f := range batch {
		vfs[i] = f.vf
	}
	if _, err := h.imp.ImportFrames(ctx, vfs); err != nil {
		return fmt.Errorf("client: caching frames: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range batch {
		f.imported = true
	}
	h.dropFrames(func(f *heldFrame) bool { return f.live == 0 })
	return nil
}

// dropFrames drops the imported frames for which drop says so, oldest
// first, holding h.mu.
func (h *heldFrames) dropFrames(drop func(*heldFrame) bool) {
	kept := h.frames[:0]
	n := 0
	for _, f := range h.frames {
		if !f.imported || !drop(f) {
			kept = append(kept, f)
			continue
		}
		for i, c := range f.vf.Chunks() {
			if hc := h.chunks[c.Digest]; hc.f == f && hc.i == i {
				delete(h.chunks, c.Digest)
			}
		}
		h.held -= int64(len(f.vf.Decoded()))
		n++
	}
	clear(h.frames[len(kept):])
	h.frames = kept
	if n > 0 {
		close(h.dropped)
		h.dropped = make(chan struct{})
	}
}

// chunk returns the bytes of chunk d when a held frame has them, and
// whether it did, counting one of the chunk's uses. The slice is the
// frame's: read it, never modify it (it stays valid after the frame
// leaves memory). A nil *heldFrames holds nothing.
func (h *heldFrames) chunk(d castore.Digest) ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	hc, ok := h.chunks[d]
	if !ok {
		return nil, false
	}
	h.reads++
	if h.uses[d] > 0 {
		h.uses[d]--
		if h.uses[d] == 0 {
			if hc.f.live--; hc.f.live == 0 && hc.f.imported {
				h.dropFrames(func(f *heldFrame) bool { return f == hc.f })
			}
		}
	}
	return hc.f.vf.Chunk(hc.i), true
}
