// Package store is the Nix layer of nixcas: store paths, the PathInfo that
// ties a store path to its tree in the castore (with its references, NAR
// hash and size, signatures, deriver and content address), and the
// PathInfo index kept beside the castore in the same database.
//
// A PathInfo is written last, after every chunk, blob and directory it
// names, and PutPathInfo refuses one whose tree is not all present: a
// store path that can be looked up can always be rendered. A PathInfo with
// a content address is recorded only if the address gives its store path
// by Nix's rules (text, source and fixed-output paths) and matches its
// contents (CheckContentAddress); one refused never replaces the PathInfo
// already recorded.
//
// The index also keeps the files Nix puts beside store paths in a binary
// cache (build logs, debug info links, realisations: [File]), their bytes
// as castore blobs, under meta records of kind 'f'.
//
// Store paths can be deleted (Delete: the PathInfo goes, its data stays
// until a garbage collection), pinned (Pin, meta records of kind 'P'), and
// expired by retention (Expire), which deletes the paths neither uploaded
// nor read within an age, then the least recently used while the NAR
// sizes of the paths left exceed a size, never pinned ones. When a path
// was last uploaded or read is kept to the minute under kind 'A': Put
// writes it with the PathInfo, reads are noted in memory
// (RecordAccess) and written in batches (FlushAccess), refreshed at most
// once per AccessRefresh. Verify checks that every path's data is there
// and, reading it, sound, and can delete what is not.
//
// Signatures are over Nix's fingerprint,
//
//	1;<store path>;sha256:<nixbase32 NAR hash>;<NAR size>;<comma-joined reference paths>
//
// which depends on nothing but the content, so compression, URLs and
// storage changes never invalidate one.
package store
