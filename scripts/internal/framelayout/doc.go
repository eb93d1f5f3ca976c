// Command framelayout measures how the layout of new chunks into hot
// frames changes what the hot tier stores and what its zstd costs, without
// a store: it reads NARs with narrender's reader, cuts every regular file
// with castore's chunker (default options) as ingest does, keeps each
// distinct chunk once in ingest order (NAR after NAR, each in NAR order),
// and then, for each strategy, lays the new chunks of every NAR into
// frames, compresses each frame with klauspost zstd as the store's packer
// does (one frame per object, content checksum, window the frame's size
// rounded up to a power of two from 1 MiB to 8 MiB), and decodes it once.
//
// A strategy keeps one open frame per chunk class. A chunk goes to the
// open frame of its class; a frame is closed once it holds at least its
// class's frame size (the chunk that crosses the size stays in it, as in
// the packer), and every open frame is closed at the end of each NAR, as a
// store that packs what is queued after each ingest does. A strategy may
// also bound the bytes in open frames (past the bound the fullest is
// packed), reorder a NAR's new chunks before laying them out (which needs
// them all at hand), store a class uncompressed (a zstd frame of raw
// blocks that any zstd decoder reads, written without the compressor), or
// pass a class's frames through an x86 call filter before zstd (undone
// after decoding, inside the measured decode).
//
// Classes come from a file's first bytes (ELF, compressed formats, text),
// its name's extension, a chunk's own bytes (text, byte entropy), or, for
// ELF files, the chunk's offset in its file in bands of a fixed size, so
// that the same part of different binaries (the Go runtime at the start
// of every Go binary's code) meets in one frame.
//
// It prints one Markdown table: strategy, frame sizes, open frames, frames
// written, stored MB, the ratio to the xz total (-xz-bytes), zstd CPU in
// ns per NAR byte (compression, and the classification the strategy
// needs), and the mean CPU of a frame decode per chunk read (each chunk
// weighted once: what a first read of a random chunk costs), the largest
// frame, the most bytes open frames held at once, and the bytes decoded to
// read each file alone with nothing cached (the frames holding its new
// chunks) over the bytes of the files, for all files and for those with
// at least 1 MiB of new bytes. CPU is the
// thread's CPU time (CLOCK_THREAD_CPUTIME_ID on Linux) around each call,
// so what else runs on the machine changes it less than wall time.
//
//	go run ./scripts/internal/framelayout -xz-bytes N [-only ROW,...] [-j N] NAR...
//
// -only runs the rows given (numbered as in the full table), -j that many
// strategies at once.
package main
