// Package store is the Nix layer of nixcas: store paths, the PathInfo that
// ties a store path to its tree in the castore (with its references, NAR
// hash and size, signatures, deriver and content address), and the
// PathInfo index kept beside the castore in the same database.
//
// A PathInfo is written last, after every chunk, blob and directory it
// names, and PutPathInfo refuses one whose tree is not all present: a
// store path that can be looked up can always be rendered.
//
// Signatures are over Nix's fingerprint,
//
//	1;<store path>;sha256:<nixbase32 NAR hash>;<NAR size>;<comma-joined reference paths>
//
// which depends on nothing but the content, so compression, URLs and
// storage changes never invalidate one.
package store
