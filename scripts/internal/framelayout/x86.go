package main

import "encoding/binary"

// x86Filter rewrites, in place, the 32-bit displacement after every 0xE8
// byte (the x86 near call) from relative to absolute: displacement plus
// the position after the operand, so that calls to one function from many
// places become the same bytes, which the compressor then finds as
// matches (the idea of xz's BCJ filter, not its code). Only displacements
// within ±16 MiB are rewritten, and into the same range, so that
// x86Unfilter, seeing the same bytes at the same places, makes the same
// choices and undoes it. The four bytes after every 0xE8 are skipped
// whether rewritten or not. Positions count from the start of b.
func x86Filter(b []byte) { x86Convert(b, true) }

// x86Unfilter undoes x86Filter.
func x86Unfilter(b []byte) { x86Convert(b, false) }

func x86Convert(b []byte, encode bool) {
	const span = 1 << 24 // displacements in [-span, span) are rewritten
	for i := 0; i+5 <= len(b); {
		if b[i] != 0xE8 {
			i++
			continue
		}
		// The four bytes after 0xE8 are taken as its operand whether or
		// not they are rewritten, so both directions look for 0xE8 at the
		// same places, in bytes neither rewrites.
		v := int32(binary.LittleEndian.Uint32(b[i+1:]))
		if v < -span || v >= span {
			i += 5
			continue
		}
		pos := int32(i + 5)
		if !encode {
			pos = -pos
		}
		// Wrap into [-span, span): a bijection of that range.
		w := (v+pos+span)&(2*span-1) - span
		binary.LittleEndian.PutUint32(b[i+1:], uint32(w))
		i += 5
	}
}
