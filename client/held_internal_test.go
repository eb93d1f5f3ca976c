package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// recordingImporter records the frames imported, failing when told to.
type recordingImporter struct {
	imported []castore.Digest
	fail     error
}

func (r *recordingImporter) ImportFrames(_ context.Context, frames []*pebblestore.VerifiedFrame) (int, error) {
	if r.fail != nil {
		return 0, r.fail
	}
	for _, f := range frames {
		r.imported = append(r.imported, f.Name())
	}
	return len(frames), nil
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
// writers read nothing meanwhile; a failed import is the pull's error.
func TestHeldFrames(t *testing.T) {
	ctx := context.Background()
	SetHeldLimits(t, 1000, 1) // over the budget with one frame; each frame imported at once
	f1, d1 := oneChunkFrame(t, 1, 1500)
	f2, d2 := oneChunkFrame(t, 2, 1500)
	f3, d3 := oneChunkFrame(t, 3, 1500)
	imp := &recordingImporter{}
	h := &heldFrames{imp: imp, uses: map[castore.Digest]int{d1: 2, d2: 1, d3: 1}, chunks: map[castore.Digest]heldChunk{}, dropped: make(chan struct{})}

	if err := h.add(ctx, f1); err != nil {
		t.Fatal(err)
	}
	// f2 waits for room: the writers read chunk 1 twice, which drops f1.
	added := make(chan error, 1)
	go func() { added <- h.add(ctx, f2) }()
	for range 2 {
		if b, ok := h.chunk(d1); !ok || castore.Hash(b) != d1 {
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
	if _, ok := h.chunk(d1); ok {
		t.Error("chunk 1 still held after its uses")
	}
	// A writer waits for chunk 3, and nobody reads chunk 2: adding f3
	// drops f2, imported, after heldStall.
	h.waitingWriter(1)
	if err := h.add(ctx, f3); err != nil {
		t.Fatal(err)
	}
	h.waitingWriter(-1)
	if _, ok := h.chunk(d2); ok {
		t.Error("chunk 2 still held after a stall over the budget")
	}
	if b, ok := h.chunk(d3); !ok || castore.Hash(b) != d3 {
		t.Errorf("chunk 3 held: %v", ok)
	}
	if len(imp.imported) != 3 || h.held != 0 || len(h.frames) != 0 {
		t.Errorf("imported %d frames, %d bytes in %d frames still held; want 3, none", len(imp.imported), h.held, len(h.frames))
	}

	// Over the budget with no writer waiting, a stream waits until the
	// writers are done.
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

	// A failed import fails the add that triggered it.
	imp.fail = errors.New("disk full")
	h = &heldFrames{imp: imp, uses: map[castore.Digest]int{}, chunks: map[castore.Digest]heldChunk{}, dropped: make(chan struct{})}
	if err := h.add(ctx, f1); !errors.Is(err, imp.fail) {
		t.Errorf("add with a failing import = %v", err)
	}
}
