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
