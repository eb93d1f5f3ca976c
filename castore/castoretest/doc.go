// Package castoretest is the conformance suite every castore.Store backend
// runs, with helpers that keep store tests short.
//
// A backend's test calls [Run] with a function opening a fresh, empty
// store:
//
//	func TestMemoryStore(t *testing.T) {
//		castoretest.Run(t, func(*testing.T) castore.Store { return new(castore.MemoryStore) })
//	}
//
// Each subtest opens its own store and closes it when done (Close is safe
// twice, so the opener may also close it in a t.Cleanup). The suite covers
// missing keys, round trips, counters, refusal of invalid or mismatching
// input with nothing stored, concurrent puts of the same and of distinct
// items, closing twice, and a large blob streamed through castore.Writer and
// read back with castore.OpenBlob.
package castoretest
