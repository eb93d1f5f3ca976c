package castore

import (
	"encoding/binary"
	"fmt"

	"github.com/pierrec/lz4/v4"
)

// Codec bytes: the first byte of a stored chunk says how the rest is coded.
const (
	// CodecRaw: the chunk's bytes as they are.
	CodecRaw byte = 0
	// CodecLZ4: uvarint(uncompressed length), then one lz4 block.
	CodecLZ4 byte = 1
)

// MaxChunkSize bounds any chunk a store accepts or decodes: decoding never
// allocates by a length it has not checked against this.
const MaxChunkSize = 16 << 20

// ChunkEncoder compresses chunks for storage. It keeps lz4 state between
// calls, so use one per goroutine; the zero value is ready.
type ChunkEncoder struct {
	c lz4.Compressor
}

// Encode appends the stored form of data to dst: lz4 when that makes it
// smaller, raw otherwise.
func (e *ChunkEncoder) Encode(dst, data []byte) []byte {
	start := len(dst)
	need := 1 + binary.MaxVarintLen64 + lz4.CompressBlockBound(len(data))
	dst = Grow(dst, need)
	buf := dst[start : start+need]
	buf[0] = CodecLZ4
	h := 1 + binary.PutUvarint(buf[1:], uint64(len(data)))
	n, err := e.c.CompressBlock(data, buf[h:])
	if err != nil || n == 0 || h+n >= 1+len(data) {
		dst = dst[:start+1+len(data)]
		dst[start] = CodecRaw
		copy(dst[start+1:], data)
		return dst
	}
	return dst[:start+h+n]
}

// DecodeChunk appends the chunk coded in stored to dst.
func DecodeChunk(dst, stored []byte) ([]byte, error) {
	if len(stored) == 0 {
		return dst, fmt.Errorf("%w: empty stored chunk", ErrCorrupt)
	}
	switch stored[0] {
	case CodecRaw:
		return append(dst, stored[1:]...), nil
	case CodecLZ4:
		size, h := binary.Uvarint(stored[1:])
		if h <= 0 || size > MaxChunkSize {
			return dst, fmt.Errorf("%w: lz4 chunk header", ErrCorrupt)
		}
		start := len(dst)
		dst = Grow(dst, int(size))[:start+int(size)]
		n, err := lz4.UncompressBlock(stored[1+h:], dst[start:])
		if err != nil || n != int(size) {
			return dst[:start], fmt.Errorf("%w: lz4 chunk: %d of %d bytes: %v", ErrCorrupt, n, size, err)
		}
		return dst, nil
	}
	return dst, fmt.Errorf("%w: unknown chunk codec %d", ErrCorrupt, stored[0])
}

// DecodedChunkSize returns the uncompressed size of a stored chunk without
// decoding it.
func DecodedChunkSize(stored []byte) (int, error) {
	if len(stored) == 0 {
		return 0, fmt.Errorf("%w: empty stored chunk", ErrCorrupt)
	}
	switch stored[0] {
	case CodecRaw:
		return len(stored) - 1, nil
	case CodecLZ4:
		size, h := binary.Uvarint(stored[1:])
		if h <= 0 || size > MaxChunkSize {
			return 0, fmt.Errorf("%w: lz4 chunk header", ErrCorrupt)
		}
		return int(size), nil
	}
	return 0, fmt.Errorf("%w: unknown chunk codec %d", ErrCorrupt, stored[0])
}

// Grow returns b lengthened by n bytes, in place when its capacity allows,
// else in a new array holding a copy of b; the n new bytes are for the
// caller to fill.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n)
	copy(nb, b)
	return nb
}
