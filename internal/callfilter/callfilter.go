package callfilter

import (
	"bytes"
	"encoding/binary"
)

// span bounds the operands rewritten: displacements in [-span, span) are
// rewritten, into the same range, so that Decode, seeing the same bytes at
// the same places, makes the same choices. Calls further than 16 MiB away
// are rare, and leaving them alone keeps random 0xE8 bytes in data from
// turning small numbers into large ones.
const span = 1 << 24

// Encode rewrites b in place: the operand after each 0xE8 byte, taken as a
// little-endian int32 displacement within ±span, becomes displacement plus
// the position after the operand (wrapped into the same range). The four
// bytes after every 0xE8 are skipped whether rewritten or not, so Decode
// finds the 0xE8 bytes at the same places.
func Encode(b []byte) { convert(b, true) }

// Decode undoes Encode on b, in place.
func Decode(b []byte) { convert(b, false) }

func convert(b []byte, encode bool) {
	for i := 0; i+5 <= len(b); {
		j := bytes.IndexByte(b[i:len(b)-4], 0xE8)
		if j < 0 {
			return
		}
		i += j
		v := int32(binary.LittleEndian.Uint32(b[i+1:]))
		if v >= -span && v < span {
			pos := int32(i + 5)
			if !encode {
				pos = -pos
			}
			// (v + pos) wrapped into [-span, span): a bijection of the range.
			w := (v+pos+span)&(2*span-1) - span
			binary.LittleEndian.PutUint32(b[i+1:], uint32(w))
		}
		i += 5
	}
}
