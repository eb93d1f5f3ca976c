package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/internal/bufpool"
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

var (
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
// durable before the cache's index points at them). Batches are imported
// on a goroutine of their own, one at a time, so that neither the
// streams nor the writers wait for the cache's syncs.
//
// A frame leaves memory once imported and once the writers have read
// each of its chunks as many times as the tree uses it (uses). A
// received chunk is thus, from then on, either held here or in the
// cache. Streams that receive frames faster than the writers write wait
// while more than heldBudget is held (twice that after a stall, see
// waitForRoom), so the decoded bytes held stay below twice heldBudget
// plus the frames not yet imported (a batch being gathered and the
// batches queued for the importer, which streams wait to queue). A
// frame's buffer has at most twice the frame's bytes plus bufpool.Round of
// capacity (bufpool.Pool.Get), and each of the two pools of free buffers
// keeps at most bufpool.MaxFree (16 MiB): the memory of the frames stays
// below twice the bytes counted here (decoded, and stored until
// imported), plus bufpool.Round a buffer, plus 32 MiB. Safe for
// concurrent use.
type heldFrames struct {
	imp frameImporter

	batches  chan []*heldFrame // to the importer; closed by finish
	imported chan struct{}     // closed when the importer returns
	failed   chan struct{}     // closed when an import failed (importErr)

	mu           sync.Mutex
	importErr    error
	uses         map[castore.Digest]int // reads of each chunk still to come
	chunks       map[castore.Digest]heldChunk
	frames       []*heldFrame // in the order received
	pending      []*heldFrame // received, not yet queued for import
	pendingBytes int64
	held         int64                  // decoded bytes of frames
	reads        uint64                 // chunks read from held frames so far
	waiting      int                    // writers waiting for a chunk to arrive
	wanted       map[castore.Digest]int // the chunks they wait for
	writersDone  bool                   // no chunk will be read any more
	stalled      bool                   // a stall was found (waitForRoom) …
	stallReads   uint64                 // … when reads was this
	changed      chan struct{}          // closed (and replaced) when a frame leaves memory, a writer waits, or the writers are done
	decodedFree  bufpool.Pool           // decoded buffers of frames gone, for the next frames
	storedFree   bufpool.Pool           // stored buffers of frames imported, for the next frames
	peak         int64                  // the most decoded bytes held at once
	droppedLive  int                    // frames dropped with chunks still to be read
}

// heldDone, when set (by tests), is told when a pull's held frames are
// done with of the most decoded bytes held at once and of the frames
// dropped before the writers had read their chunks (which were then read
// back from the cache).
var heldDone func(peak int64, droppedLive int)

type heldFrame struct {
	vf       *pebblestore.VerifiedFrame
	live     int  // chunks with reads still to come
	readers  int  // copyChunk calls reading the frame now
	imported bool // in the cache: its stored buffer is free
	dropped  bool // out of memory: its decoded buffer is free once readers is 0
	recycled bool // its decoded buffer went to the pool
}

// heldChunk is the i-th chunk of the frame f.
type heldChunk struct {
	f *heldFrame
	i int
}

// importQueue is how many batches wait for the importer before a stream
// that has another waits to queue it.
const importQueue = 4

// A pull decodes its frames into the buffers of frames that left memory,
// and receives their stored bytes into the buffers of frames imported
// (bufpool), so that it reuses the memory of a few dozen frames rather
// than taking fresh pages for every frame; the kernel also copied a frame
// into the cache's file slower out of a fresh buffer than out of one it
// had copied from before.
//
// takeBuffer returns a buffer of at least n bytes of capacity from the
// pool p of h (decodedFree for a frame to decode into, storedFree for a
// frame's stored bytes, which add and the import keep until the frame is
// imported).
func (h *heldFrames) takeBuffer(p *bufpool.Pool, n int) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return p.Get(n)
}

// returnBuffer gives b, which nothing uses any more, back to the pool p
// of h.
func (h *heldFrames) returnBuffer(p *bufpool.Pool, b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p.Put(b)
}

// recycle frees the decoded buffer of f, once dropped and read by no
// one, for the next frames, holding h.mu.
func (h *heldFrames) recycle(f *heldFrame) {
	if f.readers > 0 || !f.dropped || f.recycled {
		return
	}
	f.recycled = true
	h.decodedFree.Put(f.vf.Decoded())
}

// newHeldFrames returns the frames held for a pull into cache, whose
// writers read each chunk as many times as uses says, or nil when the
// cache cannot import frames (its chunks are then put one by one). Its
// importer runs until finish has been called and every frame is
// imported, or until ctx is done.
func newHeldFrames(ctx context.Context, cache castore.Store, uses map[castore.Digest]int) *heldFrames {
	imp, ok := castore.As[frameImporter](cache)
	if !ok {
		return nil
	}
	return startHeldFrames(ctx, imp, uses)
}

// startHeldFrames returns the frames held for a pull importing into imp,
// its importer started.
func startHeldFrames(ctx context.Context, imp frameImporter, uses map[castore.Digest]int) *heldFrames {
	h := &heldFrames{
		imp:      imp,
		batches:  make(chan []*heldFrame, importQueue),
		imported: make(chan struct{}),
		failed:   make(chan struct{}),
		uses:     uses,
		chunks:   map[castore.Digest]heldChunk{},
		wanted:   map[castore.Digest]int{},
		changed:  make(chan struct{}),
	}
	go h.importer(ctx)
	return h
}

// importer imports the batches queued, in order, until finish closes
// the queue, an import fails, or ctx is done.
func (h *heldFrames) importer(ctx context.Context) {
	defer close(h.imported)
	for {
		select {
		case batch, ok := <-h.batches:
			if !ok {
				return
			}
			if err := h.importFrames(ctx, batch); err != nil {
				h.mu.Lock()
				h.importErr = err
				h.mu.Unlock()
				close(h.failed)
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// add holds the verified frame vf, its chunks readable with chunk at
// once, and queues the frames received so far for import when a batch's
// worth waits. It first waits while more than heldBudget is held, unless
// a writer waits for a chunk of vf; should that wait fail, vf is not
// held and its buffers go back to the pools.
func (h *heldFrames) add(ctx context.Context, vf *pebblestore.VerifiedFrame) error {
	if err := h.waitForRoom(ctx, vf); err != nil {
		h.returnBuffer(&h.decodedFree, vf.Decoded())
		h.returnBuffer(&h.storedFree, vf.Stored())
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
	h.peak = max(h.peak, h.held)
	var batch []*heldFrame
	if h.pendingBytes >= importBatch {
		batch, h.pending, h.pendingBytes = h.pending, nil, 0
	}
	h.mu.Unlock()
	return h.queue(ctx, batch)
}

// queue hands batch to the importer, waiting while importQueue batches
// wait.
func (h *heldFrames) queue(ctx context.Context, batch []*heldFrame) error {
	if len(batch) == 0 {
		return nil
	}
	select {
	case h.batches <- batch:
		return nil
	case <-h.failed:
		return h.err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// err is the error of the import that failed, if one did.
func (h *heldFrames) err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.importErr
}

// waitForRoom waits while more than heldBudget is held and the writers
// are at work, and none of them waits for a chunk of vf (that frame is
// let in over the budget: the writers would otherwise wait for the room
// they are to make). Should a writer wait for a chunk to arrive while
// none reads a held chunk for heldStall, it lets vf in over the budget
// while that keeps at most twice the budget held; past that, it drops
// imported frames, oldest first, down to half the budget (so that the
// next frames do not wait again at once), and returns. (Writers merely
// slow, on a loaded machine, are waited for.) A frame dropped with
// chunks still to be written is decoded again from the cache for them:
// with drops at the budget, a cold pull of a 200 MiB tree at load 16
// spent 0.28 s of its 4.8 s of CPU decoding frames again.
func (h *heldFrames) waitForRoom(ctx context.Context, vf *pebblestore.VerifiedFrame) error {
	for {
		h.mu.Lock()
		if h.held <= heldBudget || h.writersDone || h.wants(vf) || h.stillStalled(vf) {
			h.mu.Unlock()
			return nil
		}
		changed, reads := h.changed, h.reads
		h.mu.Unlock()
		select {
		case <-changed:
			continue
		case <-h.failed:
			return h.err()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(heldStall):
		}
		h.mu.Lock()
		stalled := h.reads == reads && h.waiting > 0
		if stalled {
			h.stalled, h.stallReads = true, h.reads
			if h.held+int64(len(vf.Decoded())) > 2*heldBudget {
				h.dropFrames(func(f *heldFrame) bool { return h.held > heldBudget/2 })
			}
		}
		h.mu.Unlock()
		if stalled {
			return nil
		}
	}
}

// stillStalled says, holding h.mu, whether the stall last found goes on
// (a writer still waits and no held chunk has been read since), and vf
// fits in twice the budget: the frames that follow a stall are let in
// without waiting heldStall each.
func (h *heldFrames) stillStalled(vf *pebblestore.VerifiedFrame) bool {
	return h.stalled && h.stallReads == h.reads && h.waiting > 0 &&
		h.held+int64(len(vf.Decoded())) <= 2*heldBudget
}

// wants says whether a writer waits for a chunk of vf, holding h.mu.
func (h *heldFrames) wants(vf *pebblestore.VerifiedFrame) bool {
	if len(h.wanted) == 0 {
		return false
	}
	for _, c := range vf.Chunks() {
		if h.wanted[c.Digest] > 0 {
			return true
		}
	}
	return false
}

// waitingFor counts a writer waiting for chunk d to arrive (delta 1)
// and done waiting (-1). A nil *heldFrames counts nothing.
func (h *heldFrames) waitingFor(d castore.Digest, delta int) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiting += delta
	if h.wanted[d] += delta; h.wanted[d] == 0 {
		delete(h.wanted, d)
	}
	if delta > 0 && h.held > heldBudget { // else no stream waits for room
		h.signal()
	}
}

// signal wakes the streams waiting for room, holding h.mu.
func (h *heldFrames) signal() {
	close(h.changed)
	h.changed = make(chan struct{})
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
	h.signal()
}

// finish queues the frames not yet imported, as the last batch, and
// waits until the importer has imported every frame. No frame may be
// added after it. A nil *heldFrames has nothing to import.
func (h *heldFrames) finish(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	batch := h.pending
	h.pending, h.pendingBytes = nil, 0
	h.mu.Unlock()
	if err := h.queue(ctx, batch); err != nil {
		return err
	}
	close(h.batches)
	select {
	case <-h.imported:
		if err := h.err(); err != nil {
			return err
		}
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopped waits until the importer has returned, which it does once
// finish has, or once the context it was started with is done. A nil
// *heldFrames has no importer.
func (h *heldFrames) stopped() {
	if h == nil {
		return
	}
	<-h.imported
	if heldDone != nil {
		h.mu.Lock()
		peak, dropped := h.peak, h.droppedLive
		h.mu.Unlock()
		heldDone(peak, dropped)
	}
}

// importFrames imports batch into the cache, then drops the frames of
// the batch the writers are done with.
func (h *heldFrames) importFrames(ctx context.Context, batch []*heldFrame) error {
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
		h.storedFree.Put(f.vf.Stored())
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
		if f.live > 0 {
			h.droppedLive++
		}
		f.dropped = true
		h.recycle(f)
		n++
	}
	clear(h.frames[len(kept):])
	h.frames = kept
	if n > 0 {
		h.signal()
	}
}

// copyChunk appends the bytes of chunk d to dst when a held frame has
// them, and says whether it did, counting one of the chunk's uses. The
// bytes are copied out of the frame, whose buffer the next frames reuse
// once it has left memory. A nil *heldFrames holds nothing.
func (h *heldFrames) copyChunk(d castore.Digest, dst []byte) ([]byte, bool) {
	if h == nil {
		return dst, false
	}
	h.mu.Lock()
	hc, ok := h.chunks[d]
	if !ok {
		h.mu.Unlock()
		return dst, false
	}
	f := hc.f
	h.reads++
	f.readers++
	if h.uses[d] > 0 {
		h.uses[d]--
		if h.uses[d] == 0 {
			if f.live--; f.live == 0 && f.imported {
				h.dropFrames(func(g *heldFrame) bool { return g == f })
			}
		}
	}
	h.mu.Unlock()
	// Copied without the lock, so that the writers copy side by side:
	// the frame's buffer is not reused while readers counts this call.
	dst = append(dst, f.vf.Chunk(hc.i)...)
	h.mu.Lock()
	f.readers--
	h.recycle(f)
	h.mu.Unlock()
	return dst, true
}
