// Package testtree builds deterministic file trees on disk for tests that
// round-trip directories through NAR serialisation and the chunk store.
//
// A tree is described by a [Node]: a regular file (with [Content] generated
// on demand, so multi-hundred-MiB files never sit in memory), a symlink, or a
// directory of named children. [Build] materialises a Node at a path and
// [WriteNAR] serialises the same Node in Nix Archive format without touching
// the filesystem, which is useful for trees that Nix itself cannot dump
// (paths longer than PATH_MAX) and for cross-checking `nix-store --dump`.
//
// [EdgeCases] returns the catalogue of awkward trees (unicode and maximal
// names, deep nesting, every kind of symlink, sizes around NAR padding and
// chunker limits, thousands of entries, non-directory roots, repeated
// content). [Big] returns a separate tree holding one large file, for tests
// that opt in to the extra time and disk space.
//
// All content is pseudo-random or synthetic text derived from fixed seeds, so
// every run produces byte-identical trees.
package testtree
