// Package objectstoretest is the conformance suite of
// pebblestore.ObjectStore implementations: every backend (DirObjects, S3)
// and every wrapper (the local object cache) runs it.
//
//	objectstoretest.Run(t, func(t *testing.T) pebblestore.ObjectStore { return pebblestore.NewDirObjects(t.TempDir()) })
//
// Objects are named by the hex BLAKE3 of their bytes, as frames are.
package objectstoretest
