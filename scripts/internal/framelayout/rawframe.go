package main

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// rawBlockMax is the largest block zstd allows (RFC 8878 Block_Maximum_Size).
const rawBlockMax = 128 << 10

// rawFrame appends to dst data as one zstd frame of raw (stored) blocks,
// with the frame content size and a content checksum: what any zstd
// decoder reads back as data, made without the compressor. The frame
// header is the magic number, a descriptor (single segment, 4-byte
// content size, checksum) and the content size; each block has a 3-byte
// header (last-block bit, type 0 = raw, size).
func rawFrame(dst, data []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, 0xFD2FB528)
	dst = append(dst, 2<<6|1<<5|1<<2)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(data)))
	rest := data
	for {
		n := min(len(rest), rawBlockMax)
		h := uint32(n) << 3
		if n == len(rest) {
			h |= 1
		}
		dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
		dst = append(dst, rest[:n]...)
		rest = rest[n:]
		if len(rest) == 0 {
			break
		}
	}
	return binary.LittleEndian.AppendUint32(dst, uint32(xxhash.Sum64(data)))
}

// rawFrameSize is len(rawFrame(nil, data)) for n bytes of data.
func rawFrameSize(n int) int {
	blocks := max(1, (n+rawBlockMax-1)/rawBlockMax)
	return 4 + 1 + 4 + 3*blocks + n + 4
}
