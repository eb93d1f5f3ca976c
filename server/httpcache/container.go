package httpcache

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"math/bits"
)

// A storedFormat puts a NAR in a compression container without
// compressing it, so that a client which asks for the NAR compressed (as
// Nix does for the URL it uploaded a compressed NAR under) gets a body it
// can decompress, at the cost of copying. The body is a header, the NAR
// cut into blocks of block bytes (the last one shorter) each behind a
// block header of blockHeaderLen bytes, and a trailer. The length of every
// part follows from the NAR's size, so the body's size does too, and any
// byte range of the body can be made from the NAR range under it.
//
// Each format's encoder is a few lines over its specification:
//   - xz (.xz file format 1.2): one block with one LZMA2 filter, made of
//     uncompressed LZMA2 chunks of 64 KiB, no integrity check (type None);
//   - zstd (RFC 8878): one frame with its content size, a 128 KiB window
//     and raw blocks of 128 KiB, no checksum;
//   - br (RFC 7932): uncompressed meta-blocks of 64 KiB, then an empty
//     last one;
//   - gzip (RFC 1952/1951): stored deflate blocks of 65535 bytes; its
//     trailer holds the NAR's CRC-32, so a range that reaches the trailer
//     costs a pass over the whole NAR;
//   - lz4 (frame format 1.6): uncompressed blocks of 64 KiB, no checksums.
type storedFormat struct {
	compression string // the narinfo Compression value served
	contentType string
	block       uint64 // NAR bytes per block
	// blockHeaderLen is the length of every block header.
	blockHeaderLen uint64
	// header appends the body's header for a NAR of narSize bytes.
	header func(dst []byte, narSize uint64) []byte
	// blockHeader appends the header of block i, of n NAR bytes; last
	// says it is the final block.
	blockHeader func(dst []byte, i, n uint64, last bool) []byte
	// trailer appends the body's trailer; crc is the NAR's CRC-32 (IEEE)
	// when needsCRC, else 0.
	trailer  func(dst []byte, narSize uint64, crc uint32) []byte
	needsCRC bool
}

// storedFormats are the formats served without compressing, by narinfo
// Compression value. "bzip2" has no uncompressed mode and is compressed on
// the fly instead (see serveBzip2).
var storedFormats = map[string]*storedFormat{
	"xz":   xzFormat,
	"zstd": zstdFormat,
	"br":   brotliFormat,
	"gzip": gzipFormat,
	"lz4":  lz4Format,
}

// blocks is the number of blocks of a NAR of narSize bytes (a NAR is never
// empty).
func (f *storedFormat) blocks(narSize uint64) uint64 {
	return (narSize + f.block - 1) / f.block
}

// size is the length of the body for a NAR of narSize bytes.
func (f *storedFormat) size(narSize uint64) uint64 {
	return uint64(len(f.header(nil, narSize))) + f.blocks(narSize)*f.blockHeaderLen + narSize +
		uint64(len(f.trailer(nil, narSize, 0)))
}

// renderFunc writes bytes [off, off+n) of a NAR to w.
type renderFunc func(w io.Writer, off, n uint64) error

// writeRange writes bytes [off, off+n) of the body for a NAR of narSize
// bytes to w, rendering only the NAR bytes under that range (and, for a
// format whose trailer holds a CRC, the rest of the NAR through the CRC
// when the range reaches the trailer).
func (f *storedFormat) writeRange(w io.Writer, narSize, off, n uint64, render renderFunc) error {
	hdr := f.header(nil, narSize)
	h := uint64(len(hdr))
	step := f.blockHeaderLen + f.block
	trailerAt := h + f.blocks(narSize)*f.blockHeaderLen + narSize
	fw := &framer{f: f, w: w, lo: off, hi: off + n, h: h, narSize: narSize}
	if err := fw.emit(hdr); err != nil {
		return err
	}

	// The NAR range [a, b) under the window's part in the blocks. A body
	// position in a block header maps to the block's first NAR byte,
	// which, rendered, makes the framer write the header.
	toNAR := func(q uint64) uint64 {
		i, in := (q-h)/step, (q-h)%step
		if in < f.blockHeaderLen {
			return i * f.block
		}
		return i*f.block + in - f.blockHeaderLen
	}
	var a, b uint64
	if lo, hi := max(off, h), min(off+n, trailerAt); lo < hi {
		a, b = toNAR(lo), toNAR(hi-1)+1
	}
	needsCRC := f.needsCRC && off+n > trailerAt
	var crc crcWriter
	if needsCRC && a > 0 {
		if err := render(&crc, 0, a); err != nil {
			return err
		}
	}
	if b > a {
		fw.x = a
		if needsCRC {
			fw.crc = &crc
		}
		if err := render(fw, a, b-a); err != nil {
			return err
		}
	}
	if needsCRC && b < narSize {
		if err := render(&crc, b, narSize-b); err != nil {
			return err
		}
	}
	fw.pos = trailerAt
	return fw.emit(f.trailer(nil, narSize, crc.sum))
}

// framer writes the part of a body inside the window [lo, hi), given the
// NAR bytes from offset x on; it adds the block headers itself.
type framer struct {
	f       *storedFormat
	w       io.Writer
	lo, hi  uint64 // the window, in body positions
	h       uint64 // length of the body's header
	narSize uint64
	pos     uint64 // body position of the next byte emitted
	x       uint64 // NAR offset of the next byte written
	crc     *crcWriter
	buf     []byte
}

// emit writes the part of p inside the window, p being at body position
// pos, and moves pos past p.
func (fw *framer) emit(p []byte) error {
	start, end := fw.pos, fw.pos+uint64(len(p))
	fw.pos = end
	if end <= fw.lo || start >= fw.hi {
		return nil
	}
	p = p[max(fw.lo, start)-start : min(fw.hi, end)-start]
	_, err := fw.w.Write(p)
	return err
}

// Write takes NAR bytes at offset fw.x.
func (fw *framer) Write(p []byte) (int, error) {
	n := len(p)
	if fw.crc != nil {
		fw.crc.Write(p)
	}
	f := fw.f
	for len(p) > 0 {
		i, in := fw.x/f.block, fw.x%f.block
		blockStart := fw.h + i*(f.blockHeaderLen+f.block)
		if in == 0 {
			k := min(f.block, fw.narSize-fw.x)
			fw.buf = f.blockHeader(fw.buf[:0], i, k, fw.x+k == fw.narSize)
			fw.pos = blockStart
			if err := fw.emit(fw.buf); err != nil {
				return 0, err
			}
		}
		k := min(uint64(len(p)), f.block-in)
		fw.pos = blockStart + f.blockHeaderLen + in
		if err := fw.emit(p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
		fw.x += k
	}
	return n, nil
}

// crcWriter computes the CRC-32 (IEEE) of what is written to it.
type crcWriter struct{ sum uint32 }

func (c *crcWriter) Write(p []byte) (int, error) {
	c.sum = crc32.Update(c.sum, crc32.IEEETable, p)
	return len(p), nil
}

// xz: stream header, block header, uncompressed LZMA2 chunks, end of
// LZMA2 data, block padding, index, stream footer.
var xzFormat = &storedFormat{
	compression:    "xz",
	contentType:    "application/x-xz",
	block:          64 << 10, // the largest uncompressed LZMA2 chunk
	blockHeaderLen: 3,
	header: func(dst []byte, _ uint64) []byte {
		// Stream header: magic, flags (check type None), CRC32 of flags.
		dst = append(dst, 0xfd, '7', 'z', 'X', 'Z', 0, 0, 0)
		dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE([]byte{0, 0}))
		// Block header of 12 bytes: size/4-1, flags (one filter, no
		// sizes), LZMA2 filter (id 0x21) with a one-byte property: a
		// 64 KiB dictionary. Padded to 8, then its CRC32.
		bh := []byte{12/4 - 1, 0, 0x21, 1, 8, 0, 0, 0}
		dst = append(dst, bh...)
		return binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(bh))
	},
	blockHeader: func(dst []byte, i, n uint64, _ bool) []byte {
		control := byte(2) // uncompressed chunk
		if i == 0 {
			control = 1 // uncompressed chunk, dictionary reset
		}
		return append(dst, control, byte((n-1)>>8), byte(n-1))
	},
	trailer: func(dst []byte, narSize uint64, _ uint32) []byte {
		dst = append(dst, 0) // end of LZMA2 data
		// Unpadded block size: block header, LZMA2 data, no check.
		unpadded := 12 + narSize + 3*((narSize+64<<10-1)/(64<<10)) + 1
		dst = append(dst, make([]byte, pad4(unpadded))...)
		index := []byte{0, 1} // indicator, one record
		index = binary.AppendUvarint(index, unpadded)
		index = binary.AppendUvarint(index, narSize)
		index = append(index, make([]byte, pad4(uint64(len(index))))...)
		index = binary.LittleEndian.AppendUint32(index, crc32.ChecksumIEEE(index))
		dst = append(dst, index...)
		// Stream footer: CRC32 of backward size and flags, backward
		// size, flags, magic.
		foot := binary.LittleEndian.AppendUint32(nil, uint32(len(index)/4-1))
		foot = append(foot, 0, 0)
		dst = binary.LittleEndian.AppendUint32(dst, crc32.ChecksumIEEE(foot))
		return append(append(dst, foot...), 'Y', 'Z')
	},
}

// pad4 is the padding that makes n a multiple of four.
func pad4(n uint64) uint64 { return (4 - n%4) % 4 }

// zstd: frame header with the content size, raw blocks.
var zstdFormat = &storedFormat{
	compression:    "zstd",
	contentType:    "application/zstd",
	block:          128 << 10, // the largest block
	blockHeaderLen: 3,
	header: func(dst []byte, narSize uint64) []byte {
		// Magic; frame header descriptor: 8-byte content size, not a
		// single segment, no checksum, no dictionary; window descriptor:
		// 2^(10+7) = 128 KiB.
		dst = append(dst, 0x28, 0xb5, 0x2f, 0xfd, 3<<6, 7<<3)
		return binary.LittleEndian.AppendUint64(dst, narSize)
	},
	blockHeader: func(dst []byte, _, n uint64, last bool) []byte {
		v := n << 3 // block type 0: raw
		if last {
			v |= 1
		}
		return append(dst, byte(v), byte(v>>8), byte(v>>16))
	},
	trailer: func(dst []byte, _ uint64, _ uint32) []byte { return dst },
}

// br: uncompressed meta-blocks, each header three bytes; the first also
// carries the stream's window size (WBITS 24).
var brotliFormat = &storedFormat{
	compression:    "br",
	contentType:    "application/x-brotli",
	block:          64 << 10, // MLEN in four nibbles
	blockHeaderLen: 3,
	header:         func(dst []byte, _ uint64) []byte { return dst },
	blockHeader: func(dst []byte, i, n uint64, _ bool) []byte {
		// ISLAST 0, MNIBBLES 4 (code 0), MLEN-1 in 16 bits,
		// ISUNCOMPRESSED 1, then zero bits up to the byte boundary.
		v := (n-1)<<3 | 1<<19
		if i == 0 {
			// WBITS 24: a 1 bit, then 7 in three bits.
			v = 0xf | (n-1)<<7 | 1<<23
		}
		return append(dst, byte(v), byte(v>>8), byte(v>>16))
	},
	trailer: func(dst []byte, _ uint64, _ uint32) []byte {
		return append(dst, 0b11) // ISLAST 1, ISLASTEMPTY 1
	},
}

// gzip: member header, stored deflate blocks, CRC-32 and size.
var gzipFormat = &storedFormat{
	compression:    "gzip",
	contentType:    "application/gzip",
	block:          65535, // the largest stored block
	blockHeaderLen: 5,
	header: func(dst []byte, _ uint64) []byte {
		// Magic, deflate, no flags, no time, no extra flags, OS unknown.
		return append(dst, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
	},
	blockHeader: func(dst []byte, _, n uint64, last bool) []byte {
		var final byte // BTYPE 00: stored
		if last {
			final = 1
		}
		dst = append(dst, final)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
		return binary.LittleEndian.AppendUint16(dst, ^uint16(n))
	},
	trailer: func(dst []byte, narSize uint64, crc uint32) []byte {
		dst = binary.LittleEndian.AppendUint32(dst, crc)
		return binary.LittleEndian.AppendUint32(dst, uint32(narSize))
	},
	needsCRC: true,
}

// lz4: frame descriptor without content size or checksums, uncompressed
// blocks, end mark.
var lz4Format = &storedFormat{
	compression:    "lz4",
	contentType:    "application/x-lz4",
	block:          64 << 10,
	blockHeaderLen: 4,
	header: func(dst []byte, _ uint64) []byte {
		// FLG: version 01, independent blocks; BD: 64 KiB blocks; then
		// the descriptor's checksum.
		desc := []byte{0x60, 0x40}
		dst = append(dst, 0x04, 0x22, 0x4d, 0x18)
		dst = append(dst, desc...)
		return append(dst, byte(xxh32(desc)>>8))
	},
	blockHeader: func(dst []byte, _, n uint64, _ bool) []byte {
		return binary.LittleEndian.AppendUint32(dst, uint32(n)|1<<31) // high bit: uncompressed
	},
	trailer: func(dst []byte, _ uint64, _ uint32) []byte {
		return append(dst, 0, 0, 0, 0)
	},
}

// xxh32 is XXH32 with seed 0 of an input shorter than 16 bytes, as the
// lz4 frame descriptor's checksum needs.
func xxh32(p []byte) uint32 {
	const (
		p1 uint32 = 2654435761
		p2 uint32 = 2246822519
		p3 uint32 = 3266489917
		p4 uint32 = 668265263
		p5 uint32 = 374761393
	)
	h := p5 + uint32(len(p))
	for ; len(p) >= 4; p = p[4:] {
		h += binary.LittleEndian.Uint32(p) * p3
		h = bits.RotateLeft32(h, 17) * p4
	}
	for _, c := range p {
		h += uint32(c) * p5
		h = bits.RotateLeft32(h, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}
