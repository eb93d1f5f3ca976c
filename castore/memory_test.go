package castore_test

import (
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
)

func TestMemoryStore(t *testing.T) {
	castoretest.Run(t, func(*testing.T) castore.Store { return new(castore.MemoryStore) })
}
