package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// recordingImporter records the frames imported, failing when told to,
// and refuses a frame whose stored bytes no longer hash to its name (as
// the cache would: its buffer was reused before the import).
type recordingImporter struct {
	mu       sync.Mutex
	imported []castore.Digest
	fail     error
	before   func() // when set, called as each import begins
}

func (r *recordingImporter) ImportFrames(_ context.Context, frames []*pebblestore.VerifiedFrame) (int, error) {
	if r.fail != nil {
		return 0, r.fail
	}
	if r.before != nil {
		r.before()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range frames {
		if castore.Hash(f.Stored()) != f.Name() {
			return 0, fmt.Errorf("%w: frame %s: its stored bytes changed before its import", castore.ErrCorrupt, f.Name())
		}
		r.imported = append(r.imported, f.Name())
	}
	return len(frames), nil
}

// waitImported waits until imp has imported the frame name.
func waitImported(t *testing.T, imp *recordingImporter, name castore.Digest) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, n := range imp.names() {
			if n == name {
				return
			}
		}
	}
	t.Fatalf("frame %s not imported within a minute", name)
}

// names returns the names of the frames imported so far.
func (r *recordingImporter) names() []castore.Digest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]castore.Digest(nil), r.imported...)
}

// oneChunkFrame returns a verified frame holding one chunk of n bytes.
func oneChunkFrame(t *testing.T, seed byte, n int) (*pebblestore.VerifiedFrame, castore.Digest) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = seed + byte(i*7)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	stored := enc.EncodeAll(data, nil)
	d := castore.Hash(data)
	vf, err := pebblestore.VerifyFrame(castore.Hash(stored), stored, []pebblestore.FrameChunk{{Digest: d, Length: uint32(n)}})
	if err != nil {
		t.Fatal(err)
	}
	return vf, d
}

// TestHeldFrames: a frame leaves memory once imported and once its chunks
// were read as often as the tree uses them; a stream over the budget
// waits for that, and drops imported frames after heldStall when the
// writers read nothing meanwhile, but lets in at once a frame a writer
// waits for; finish returns once every frame is imported.
func TestHeldFrames(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	SetHeldLimits(t, 1000, 1) // over the budget with one frame; each frame queued for import at once
	f1, d1 := oneChunkFrame(t, 1, 1500)
	f2, d2 := oneChunkFrame(t, 2, 1500)
	f3, d3 := oneChunkFrame(t, 3, 1500)
	imp := &recordingImporter{}
	h := startHeldFrames(ctx, imp, map[castore.Digest]int{d1: 2, d2: 1, d3: 1})

	if err := h.add(ctx, f1); err != nil {
		t.Fatal(err)
	}
	// f2 waits for room: the writers read chunk 1 twice, which drops f1
	// once it is imported.
	added := make(chan error, 1)
	go func() { added <- h.add(ctx, f2) }()
	for range 2 {
		if b, ok := h.copyChunk(d1, nil); !ok || castore.Hash(b) != d1 {
			t.Fatalf("chunk 1 held: %v", ok)
		}
	}
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("add did not return once the frame held was used up")
	}
	if _, ok := h.copyChunk(d1, nil); ok {
		t.Error("chunk 1 still held after its uses")
	}
	// A writer waits for chunk 3, and nobody reads chunk 2: adding f3
	// drops f2, imported, after heldStall.
	waitImported(t, imp, f2.Name())
	var elsewhere castore.Digest // a chunk of a frame not received yet
	elsewhere[0] = 9
	h.waitingFor(elsewhere, 1)
	if err := h.add(ctx, f3); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.copyChunk(d2, nil); ok {
		t.Error("chunk 2 still held after a stall over the budget")
	}
	h.waitingFor(elsewhere, -1)
	// A writer waits for chunk 6: its frame is let in over the budget at
	// once, nothing dropped (f3 is still held, its chunk unread).
	waitImported(t, imp, f3.Name())
	f6, d6 := oneChunkFrame(t, 6, 1500)
	h.uses[d6] = 1
	h.waitingFor(d6, 1)
	go func() { added <- h.add(ctx, f6) }()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("add of a frame a writer waits for did not return")
	}
	h.waitingFor(d6, -1)
	h.mu.Lock()
	_, held3 := h.chunks[d3]
	h.mu.Unlock()
	if !held3 {
		t.Error("chunk 3 dropped to let in a frame a writer waits for")
	}
	if b, ok := h.copyChunk(d6, nil); !ok || castore.Hash(b) != d6 {
		t.Errorf("chunk 6 held: %v", ok)
	}
	if b, ok := h.copyChunk(d3, nil); !ok || castore.Hash(b) != d3 {
		t.Errorf("chunk 3 held: %v", ok)
	}
	if err := h.finish(ctx); err != nil {
		t.Fatal(err)
	}
	if h.held != 0 || len(h.frames) != 0 {
		t.Errorf("%d bytes in %d frames still held after finish; want none", h.held, len(h.frames))
	}
	seen := map[castore.Digest]bool{}
	for _, n := range imp.names() {
		seen[n] = true
	}
	for _, f := range []*pebblestore.VerifiedFrame{f1, f2, f3, f6} {
		if !seen[f.Name()] {
			t.Errorf("frame %s not imported", f.Name())
		}
	}

	// Over the budget with no writer waiting, a stream waits until the
	// writers are done.
	h = startHeldFrames(ctx, imp, map[castore.Digest]int{})
	f4, _ := oneChunkFrame(t, 4, 1500)
	f5, _ := oneChunkFrame(t, 5, 1500)
	h.uses[f4.Chunks()[0].Digest] = 1
	if err := h.add(ctx, f4); err != nil {
		t.Fatal(err)
	}
	go func() { added <- h.add(ctx, f5) }()
	select {
	case err := <-added:
		t.Fatalf("add over the budget returned (%v) while the writers were at work", err)
	case <-time.After(3 * heldStall):
	}
	h.doneWriting()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("add did not return once the writers were done")
	}
	if err := h.finish(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHeldFramesImportFails: a failed import is the error of finish and
// of the adds after it, and a stream waiting for room stops waiting.
func TestHeldFramesImportFails(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	SetHeldLimits(t, 1000, 1)
	imp := &recordingImporter{fail: errors.New("disk full")}
	f1, d1 := oneChunkFrame(t, 1, 1500)
	f2, _ := oneChunkFrame(t, 2, 1500)
	h := startHeldFrames(ctx, imp, map[castore.Digest]int{d1: 1})
	if err := h.add(ctx, f1); err != nil {
		t.Fatal(err) // queued; the import fails on the importer
	}
	// Over the budget, f1 never imported: the add waits for room until
	// the import fails.
	if err := h.add(ctx, f2); !errors.Is(err, imp.fail) {
		t.Errorf("add after a failed import = %v", err)
	}
	if err := h.finish(ctx); !errors.Is(err, imp.fail) {
		t.Errorf("finish after a failed import = %v", err)
	}
}

// TestHeldFramesCancelled: the importer stops with the pull's context,
// and finish then returns.
func TestHeldFramesCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := startHeldFrames(ctx, &recordingImporter{}, map[castore.Digest]int{})
	cancel()
	select {
	case <-h.imported:
	case <-time.After(time.Minute):
		t.Fatal("the importer did not stop with its context")
	}
	if err := h.finish(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("finish after the pull was cancelled = %v", err)
	}
}

// TestHeldFramesStallUnderTwiceBudget: after a stall (a writer waits for
// a chunk of a frame not received, no held chunk read), a stream lets its
// frame in over the budget without dropping a frame while at most twice
// the budget is then held; past that it drops imported frames, whose
// chunks the writers would otherwise read back from the cache.
func TestHeldFramesStallUnderTwiceBudget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	SetHeldLimits(t, 1000, 1) // each frame queued for import at once
	f1, d1 := oneChunkFrame(t, 1, 600)
	f2, d2 := oneChunkFrame(t, 2, 600)
	f3, d3 := oneChunkFrame(t, 3, 600)
	f4, d4 := oneChunkFrame(t, 4, 600)
	f5, d5 := oneChunkFrame(t, 5, 100)
	imp := &recordingImporter{}
	h := startHeldFrames(ctx, imp, map[castore.Digest]int{d1: 1, d2: 1, d3: 1, d4: 1, d5: 1})
	for _, f := range []*pebblestore.VerifiedFrame{f1, f2} { // 1200 held, over the budget
		if err := h.add(ctx, f); err != nil {
			t.Fatal(err)
		}
		waitImported(t, imp, f.Name())
	}
	var elsewhere castore.Digest // a chunk of a frame not received yet
	elsewhere[0] = 9
	h.waitingFor(elsewhere, 1)
	held := func(d castore.Digest) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		_, ok := h.chunks[d]
		return ok
	}
	// 1800 held after f3: under twice the budget, nothing dropped.
	if err := h.add(ctx, f3); err != nil {
		t.Fatal(err)
	}
	for i, d := range []castore.Digest{d1, d2, d3} {
		if !held(d) {
			t.Errorf("chunk %d dropped letting in a frame within twice the budget", i+1)
		}
	}
	// The stall goes on: the next frame within twice the budget (1900)
	// is let in without a wait of its own (with a wait of an hour, a
	// stream would otherwise take in one frame an hour).
	heldStall = time.Hour
	added := make(chan error, 1)
	go func() { added <- h.add(ctx, f5) }()
	select {
	case err := <-added:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a frame within twice the budget waited again while the stall went on")
	}
	heldStall = 100 * time.Millisecond
	// 2500 would be over twice the budget: imported frames are dropped,
	// oldest first, down to half the budget.
	waitImported(t, imp, f3.Name())
	waitImported(t, imp, f5.Name())
	if err := h.add(ctx, f4); err != nil {
		t.Fatal(err)
	}
	if held(d1) || held(d2) || held(d3) {
		t.Errorf("chunks held after a stall past twice the budget: %v %v %v; want none", held(d1), held(d2), held(d3))
	}
	if !held(d4) {
		t.Error("chunk 4 not held")
	}
	h.waitingFor(elsewhere, -1)
	h.doneWriting()
	if err := h.finish(ctx); err != nil {
		t.Fatal(err)
	}
}

// heldFrameInto returns a frame holding one chunk of n bytes, its stored
// bytes and its decoded bytes in the buffers h gives for them, as a pull
// receives and decodes it.
func heldFrameInto(t *testing.T, h *heldFrames, seed byte, n int) (*pebblestore.VerifiedFrame, castore.Digest) {
	t.Helper()
	f, d := oneChunkFrame(t, seed, n)
	stored := append(h.takeBuffer(&h.storedFree, len(f.Stored())), f.Stored()...)
	vf, err := pebblestore.VerifyFrameInto(f.Name(), stored, h.takeBuffer(&h.decodedFree, n), f.Chunks())
	if err != nil {
		t.Fatal(err)
	}
	return vf, d
}

// sameArray says whether a and b start at the same byte of memory.
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// TestHeldFramesReuseBuffers: the next frames decode into the buffer of
// a frame that left memory, once no writer copies out of it any more,
// and receive their stored bytes into the buffer of a frame imported,
// never into that of a frame being imported; the chunks copied out are
// the frame's whatever happens to it next.
func TestHeldFramesReuseBuffers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	SetHeldLimits(t, 1<<30, 1) // each frame queued for import at once
	importing, imports := make(chan struct{}), make(chan struct{})
	var once sync.Once
	imp := &recordingImporter{before: func() {
		once.Do(func() {
			close(importing)
			<-imports
		})
	}}
	h := startHeldFrames(ctx, imp, map[castore.Digest]int{})
	f1, d1 := heldFrameInto(t, h, 1, 5000)
	h.uses[d1] = 1
	if err := h.add(ctx, f1); err != nil {
		t.Fatal(err)
	}
	// While frame 1 is being imported, the next frame is received into a
	// buffer of its own (the importer refuses frame 1 should its stored
	// bytes change).
	<-importing
	next := append(h.takeBuffer(&h.storedFree, len(f1.Stored())), bytes.Repeat([]byte{0xAA}, len(f1.Stored()))...)
	close(imports)
	waitFor(t, "frame 1 imported or refused", func() bool {
		return h.err() != nil || slices.Contains(imp.names(), f1.Name())
	})
	if err := h.err(); err != nil {
		t.Fatalf("importing frame 1: %v", err)
	}
	if sameArray(next, f1.Stored()) {
		t.Error("a frame received into the stored buffer of a frame being imported")
	}
	waitFor(t, "stored buffer of frame 1 free after its import", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.storedFree.Buffers()) == 1 && sameArray(h.storedFree.Buffers()[0], f1.Stored())
	})

	// A writer still copying out of frame 1 when its last use drops it:
	// its buffer is not reused until that copy is done.
	h.mu.Lock()
	f := h.chunks[d1].f
	f.readers++
	h.mu.Unlock()
	got, ok := h.copyChunk(d1, nil)
	if !ok || castore.Hash(got) != d1 {
		t.Fatalf("chunk 1 held: %v", ok)
	}
	if b := h.takeBuffer(&h.decodedFree, 5000); sameArray(b, f1.Decoded()) {
		t.Fatal("frame 1's decoded buffer reused while a writer copies out of it")
	}
	h.mu.Lock()
	f.readers--
	h.recycle(f)
	h.mu.Unlock()

	f2, d2 := heldFrameInto(t, h, 2, 5000)
	if !sameArray(f2.Decoded(), f1.Decoded()) {
		t.Error("frame 2 not decoded into the buffer of frame 1, which left memory")
	}
	if !sameArray(f2.Stored(), f1.Stored()) {
		t.Error("frame 2 not received into the stored buffer of frame 1, imported")
	}
	if castore.Hash(got) != d1 {
		t.Error("the copy of chunk 1 changed when its frame's buffer was reused")
	}
	h.uses[d2] = 1
	if err := h.add(ctx, f2); err != nil {
		t.Fatal(err)
	}
	if b, ok := h.copyChunk(d2, nil); !ok || castore.Hash(b) != d2 {
		t.Fatalf("chunk 2 held: %v", ok)
	}
	if err := h.finish(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits up to a minute for cond, failing with what otherwise.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within a minute: %s", what)
}

// TestHoldFrameReturnsBuffers: a frame refused (its bytes do not hash to
// its name), or not held (the pull ends while its stream waits for
// room), gives its buffers back to the pools.
func TestHoldFrameReturnsBuffers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	SetHeldLimits(t, 1000, 1<<30) // over the budget with one frame, none imported
	h := startHeldFrames(ctx, &recordingImporter{}, map[castore.Digest]int{})
	pull := func(vf *pebblestore.VerifiedFrame, d castore.Digest) *framePull {
		return &framePull{
			meta:   castore.FrameMeta{Name: vf.Name(), StoredSize: uint64(len(vf.Stored())), DecodedSize: uint64(len(vf.Decoded()))},
			chunks: []placedChunk{{ref: castore.ChunkRef{Digest: d, Size: uint32(len(vf.Decoded()))}}},
		}
	}

	f1, d1 := oneChunkFrame(t, 1, 1500)
	bad := bytes.Clone(f1.Stored())
	bad[len(bad)/2] ^= 1
	if _, err := holdFrame(ctx, pull(f1, d1), bad, h, nil); err == nil {
		t.Fatal("a frame whose bytes do not hash to its name was held")
	}
	if len(h.decodedFree.Buffers()) != 1 || !slices.ContainsFunc(h.storedFree.Buffers(), func(b []byte) bool { return sameArray(b, bad) }) {
		t.Errorf("after a frame refused: %d decoded and %d stored buffers free, want 1 and its own", len(h.decodedFree.Buffers()), len(h.storedFree.Buffers()))
	}

	if err := h.add(ctx, f1); err != nil {
		t.Fatal(err)
	}
	f2, d2 := oneChunkFrame(t, 2, 1500)
	stored := bytes.Clone(f2.Stored())
	ended, end := context.WithCancel(ctx)
	end()
	if _, err := holdFrame(ended, pull(f2, d2), stored, h, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("holding a frame over the budget once the pull ended: %v", err)
	}
	if len(h.decodedFree.Buffers()) != 1 || !slices.ContainsFunc(h.storedFree.Buffers(), func(b []byte) bool { return sameArray(b, stored) }) {
		t.Errorf("after a frame not held: %d decoded and %d stored buffers free, want 1 and its own", len(h.decodedFree.Buffers()), len(h.storedFree.Buffers()))
	}
}
