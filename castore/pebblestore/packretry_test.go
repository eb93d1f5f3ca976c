package pebblestore_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// unavailablePuts is an ObjectStore whose puts fail while down is set, as
// object storage that is down does.
type unavailablePuts struct {
	pebblestore.ObjectStore
	down     atomic.Bool
	attempts atomic.Int64
}

func (o *unavailablePuts) PutObject(ctx context.Context, name string, data []byte) error {
	o.attempts.Add(1)
	if o.down.Load() {
		return castore.ErrUnavailable
	}
	return o.ObjectStore.PutObject(ctx, name, data)
}

// TestPackerRetries: chunks written while the object store refuses puts
// stay queued; once it is back, the packer packs them on its own, with no
// further write to wake it.
func TestPackerRetries(t *testing.T) {
	dir := t.TempDir()
	objs := &unavailablePuts{ObjectStore: pebblestore.NewDirObjects(filepath.Join(dir, "frames"))}
	objs.down.Store(true)
	opts := framedOptions
	opts.Objects = objs
	s, err := pebblestore.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	chunks := versionedChunks(0, 8) // two frames' worth
	ds := putAll(t, s, chunks)
	// Let the packer fail on every signal the writes gave it.
	for n := int64(-1); n != objs.attempts.Load(); {
		n = objs.attempts.Load()
		time.Sleep(300 * time.Millisecond)
	}
	if objs.attempts.Load() == 0 {
		t.Fatal("the packer never tried to pack")
	}
	if st := castoretest.MustStats(t, s); st.Frames != 0 {
		t.Fatalf("%d frames packed while puts failed", st.Frames)
	}
	objs.down.Store(false)
	for deadline := time.Now().Add(time.Minute); castoretest.MustStats(t, s).Frames == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing packed a minute after the object store came back")
		}
	}
	checkAll(t, s, ds, chunks)
}
