package store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/s3objects"
	"github.com/nixcas/nixcas/internal/testminio"
	"github.com/nixcas/nixcas/internal/testpg"
	"github.com/nixcas/nixcas/store"
)

// TestGCStrayFramesShared: two stores on one PostgreSQL database and one
// MinIO prefix, as two servers run them. Objects that look like frames
// but that no record names are planted, one old enough and one too
// young (as another server's frame between its put and its registration
// would be), beside one of a name of another layout. A collection deletes
// the old stray only (a dry run before it counts it and deletes nothing),
// keeps every registered frame, however old, and every path then renders
// from a store reading MinIO afresh.
func TestGCStrayFramesShared(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url, m := testpg.New(t), testminio.Start(t)
	objects := func() *s3objects.Store {
		c, err := s3objects.ParseURL(m.URL("strays", ""))
		if err != nil {
			t.Fatal(err)
		}
		o, err := s3objects.Open(ctx, c, s3objects.Options{Credentials: m.Credentials()})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	open := func(readOnly bool) (*pebblestore.Store, *store.Index) {
		s, err := pebblestore.OpenPostgres(ctx, url, t.TempDir(), pebblestore.Options{RecordUses: true, ReadOnly: readOnly, Objects: objects()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, store.NewIndex(s, s)
	}
	collector, cx := open(false)
	writer, wx := open(false)

	var paths []*store.PathInfo
	for i := range 3 {
		p := gcPath(t, writer, fmt.Sprintf("%02dakzph7l0dcbfmjap64f0czdafn3b7x-p%d", i, i), gcTree(1, uint64(100+i)))
		if err := wx.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if err := writer.PackPending(ctx); err != nil {
		t.Fatal(err)
	}

	o := objects()
	list := func() map[string]int64 {
		t.Helper()
		got := map[string]int64{}
		if err := o.ListObjects(ctx, func(name string, size int64) error {
			got[name] = size
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	registered := list()
	if len(registered) == 0 {
		t.Fatal("packing wrote no frame")
	}
	plant := func(data []byte) string {
		t.Helper()
		d := castore.Hash(data)
		name := fmt.Sprintf("%x", d[:])
		if err := o.PutObject(ctx, name, data); err != nil {
			t.Fatal(err)
		}
		return name
	}
	old := plant(bytes.Repeat([]byte("a frame whose registration never happened "), 1000))
	const foreign = "abcde" // not a frame's name: never deleted
	if err := o.PutObject(ctx, foreign, []byte("other layout")); err != nil {
		t.Fatal(err)
	}
	const strayAge = 3 * time.Second
	time.Sleep(strayAge + time.Second)
	young := plant(bytes.Repeat([]byte("a frame another server is about to register "), 1000))

	dry, err := cx.GC(ctx, collector, pebblestore.GCOptions{Grace: time.Hour, StrayAge: strayAge, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.StrayFramesDeleted != 1 || len(list()) != len(registered)+3 {
		t.Fatalf("dry run: %d strays counted, %d objects left; want 1 counted, %d left", dry.StrayFramesDeleted, len(list()), len(registered)+3)
	}
	res, err := cx.GC(ctx, collector, pebblestore.GCOptions{Grace: time.Hour, StrayAge: strayAge})
	if err != nil {
		t.Fatal(err)
	}
	after := list()
	if res.StrayFramesDeleted != 1 || res.StrayBytesFreed != int64(len("a frame whose registration never happened "))*1000 {
		t.Errorf("GC: %d strays deleted, %d bytes; want 1, of the old stray's size", res.StrayFramesDeleted, res.StrayBytesFreed)
	}
	if _, ok := after[old]; ok {
		t.Errorf("the old stray %s is still there", old)
	}
	if _, ok := after[young]; !ok {
		t.Errorf("the young stray %s was deleted: another server's frame before its registration would be lost", young)
	}
	if _, ok := after[foreign]; !ok {
		t.Errorf("the object %s of another layout was deleted", foreign)
	}
	for name := range registered {
		if _, ok := after[name]; !ok {
			t.Errorf("registered frame %s was deleted", name)
		}
	}

	reader, _ := open(true)
	for _, p := range paths {
		checkRenders(t, reader, p)
		checkRenders(t, collector, p)
	}
}
