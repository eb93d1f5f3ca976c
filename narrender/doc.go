// Package narrender converts between NARs and the castore: it ingests a NAR
// stream into directories, blobs and symlinks ([Ingest]), and renders a
// stored tree back into the byte-identical NAR ([Render]), both streaming
// with bounded memory whatever the file sizes.
//
// # The NAR format
//
// A NAR (Nix ARchive) serializes one file system object deterministically.
// Its only primitive is the string: a little-endian uint64 length, the
// bytes, then zero bytes up to a multiple of 8. A NAR is the string
// "nix-archive-1" followed by one node:
//
//	node      = "(" "type" ( regular | symlink | directory ) ")"
//	regular   = "regular" [ "executable" "" ] "contents" <file contents as one string>
//	symlink   = "symlink" "target" <target>
//	directory = "directory" { "entry" "(" "name" <name> "node" node ")" }
//
// Directory entries appear in strictly ascending byte order of their names.
// Nothing follows the root node. There are no timestamps, owners or
// permissions beyond the executable bit, so equal trees give equal NARs and
// the NAR's SHA-256 identifies its content.
//
// [Reader] is a strict streaming parser: besides the grammar it refuses
// what Nix would never write (out-of-order or duplicate names, names that
// are empty, "." or "..", contain '/' or NUL or exceed 255 bytes, empty
// symlink targets, non-zero padding, data after the end) and it never
// allocates by a length it has not checked. Every error names the byte
// offset and the path inside the archive.
package narrender
