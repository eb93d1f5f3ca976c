package testtree

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// Content is the data of a regular file. Implementations generate their bytes
// on demand: Open may be called any number of times and every reader yields
// exactly Size bytes, identical on each call.
type Content interface {
	Size() int64
	Open() io.Reader
}

// Bytes returns content holding a copy of b.
func Bytes(b []byte) Content { return bytesContent(bytes.Clone(b)) }

// Text returns content holding s.
func Text(s string) Content { return bytesContent(s) }

// Empty returns zero-length content.
func Empty() Content { return bytesContent(nil) }

type bytesContent []byte

func (c bytesContent) Size() int64     { return int64(len(c)) }
func (c bytesContent) Open() io.Reader { return bytes.NewReader(c) }

// Random returns size bytes of incompressible pseudo-random data determined
// entirely by seed. Different seeds give unrelated streams; the same seed with
// different sizes gives streams where one is a prefix of the other.
func Random(seed uint64, size int64) Content {
	return randomContent{seed: seed, size: size}
}

type randomContent struct {
	seed uint64
	size int64
}

func (c randomContent) Size() int64     { return c.size }
func (c randomContent) Open() io.Reader { return io.LimitReader(newRandStream(c.seed), c.size) }

// randStream is an endless deterministic byte stream: AES-128 in counter mode
// keyed by the seed. It is fast (hardware AES) and, unlike a small PRNG state
// copied into a buffer, never repeats within any size a test could use, so a
// content-defined chunker never sees accidental duplicates.
type randStream struct {
	ctr cipher.Stream
}

func newRandStream(seed uint64) *randStream {
	var key [16]byte
	binary.LittleEndian.PutUint64(key[:8], seed)
	binary.LittleEndian.PutUint64(key[8:], 0x6e69786361732d74) // "t-saxcin": arbitrary fixed tweak
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // key length is fixed, cannot happen
	}
	return &randStream{ctr: cipher.NewCTR(block, make([]byte, aes.BlockSize))}
}

func (r *randStream) Read(p []byte) (int, error) {
	clear(p)
	r.ctr.XORKeyStream(p, p)
	return len(p), nil
}

// Mixed returns size bytes that alternate between compressible text and
// incompressible random data in segments of a few KiB to a few hundred KiB,
// all determined by seed. It models real store paths (binaries next to
// text) well enough to exercise both compression and chunking.
func Mixed(seed uint64, size int64) Content {
	return mixedContent{seed: seed, size: size}
}

type mixedContent struct {
	seed uint64
	size int64
}

func (c mixedContent) Size() int64 { return c.size }

func (c mixedContent) Open() io.Reader {
	return io.LimitReader(&mixedReader{
		rnd:  newRandStream(c.seed),
		ctl:  c.seed*0x9e3779b97f4a7c15 | 1,
		buf:  make([]byte, 0, 320<<10),
		text: c.seed%2 == 0,
	}, c.size)
}

type mixedReader struct {
	rnd     *randStream
	ctl     uint64 // xorshift state deciding segment lengths
	buf     []byte // current segment
	off     int    // read position in buf
	text    bool   // kind of the next segment
	lineNum uint64
}

func (r *mixedReader) next() uint64 {
	r.ctl ^= r.ctl << 13
	r.ctl ^= r.ctl >> 7
	r.ctl ^= r.ctl << 17
	return r.ctl
}

// Words used to make text segments; numbered lines keep segments distinct
// while remaining highly compressible.
var mixedWords = []string{
	"lorem", "ipsum", "dolor", "sit", "amet", "nix", "store", "derivation",
	"closure", "output", "hash", "chunk", "archive", "reference", "build",
	"sandbox", "substitute", "narinfo", "signature", "compression",
}

func (r *mixedReader) fill() {
	n := 4<<10 + int(r.next()%(252<<10))
	r.buf = r.buf[:0]
	r.off = 0
	if r.text {
		for len(r.buf) < n {
			r.lineNum++
			r.buf = strconv.AppendUint(r.buf, r.lineNum, 10)
			r.buf = append(r.buf, ':')
			w := r.next()
			for i := range 8 {
				r.buf = append(r.buf, ' ')
				r.buf = append(r.buf, mixedWords[(w>>(5*i))%uint64(len(mixedWords))]...)
			}
			r.buf = append(r.buf, '\n')
		}
	} else {
		r.buf = r.buf[:n]
		r.rnd.Read(r.buf)
	}
	r.text = !r.text
}

func (r *mixedReader) Read(p []byte) (int, error) {
	if r.off == len(r.buf) {
		r.fill()
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}

// Insert returns base with data inserted at byte offset at, the way a small
// edit in the middle of a file looks to a deduplicating store.
func Insert(base Content, at int64, data []byte) Content {
	if at < 0 || at > base.Size() {
		panic(fmt.Sprintf("testtree.Insert: offset %d outside content of size %d", at, base.Size()))
	}
	return insertContent{base: base, at: at, data: bytes.Clone(data)}
}

type insertContent struct {
	base Content
	at   int64
	data []byte
}

func (c insertContent) Size() int64 { return c.base.Size() + int64(len(c.data)) }

func (c insertContent) Open() io.Reader {
	r := c.base.Open()
	return io.MultiReader(io.LimitReader(r, c.at), bytes.NewReader(c.data), r)
}

// Sum returns the SHA-256 of c's bytes, reading it in a streaming fashion.
func Sum(c Content) ([32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, c.Open())
	if err != nil {
		return [32]byte{}, err
	}
	if n != c.Size() {
		return [32]byte{}, fmt.Errorf("content produced %d bytes, declared size %d", n, c.Size())
	}
	return [32]byte(h.Sum(nil)), nil
}
