package pebblestore_test

import (
	"testing"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/pebblestore/objectstoretest"
)

func TestDirObjectsConformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore {
		return pebblestore.NewDirObjects(t.TempDir())
	})
}

// TestDirObjectsSyncAfterDelete: an object deleted between its put and
// the next sync (its frame retired meanwhile) does not fail that sync or
// any later one.
func TestDirObjectsSyncAfterDelete(t *testing.T) {
	ctx := t.Context()
	o := pebblestore.NewDirObjects(t.TempDir())
	if err := o.PutObject(ctx, "aaaa", []byte("gone before its sync")); err != nil {
		t.Fatal(err)
	}
	if err := o.PutObject(ctx, "bbbb", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := o.DeleteObject(ctx, "aaaa"); err != nil {
		t.Fatal(err)
	}
	if err := o.SyncObjects(ctx); err != nil {
		t.Fatalf("sync after a delete: %v", err)
	}
	if err := o.PutObject(ctx, "cccc", []byte("later")); err != nil {
		t.Fatal(err)
	}
	if err := o.SyncObjects(ctx); err != nil {
		t.Fatalf("a later sync: %v", err)
	}
}
