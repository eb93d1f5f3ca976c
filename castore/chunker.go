package castore

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// ChunkerOptions set the chunk sizes of FastCDC. Zero fields take the
// defaults of [DefaultChunkerOptions].
type ChunkerOptions struct {
	MinSize int // no cut before this many bytes (files smaller stay whole)
	AvgSize int // the normal size the cut points aim at; a power of two
	MaxSize int // a cut at this size at the latest
}

// DefaultChunkerOptions: 16 KiB / 64 KiB / 256 KiB.
var DefaultChunkerOptions = ChunkerOptions{MinSize: 16 << 10, AvgSize: 64 << 10, MaxSize: 256 << 10}

// EnsureDefaults fills zero fields from DefaultChunkerOptions, deriving
// MinSize and MaxSize from a given AvgSize (a quarter, four times).
func (o ChunkerOptions) EnsureDefaults() ChunkerOptions {
	if o.AvgSize == 0 {
		o.AvgSize = DefaultChunkerOptions.AvgSize
	}
	if o.MinSize == 0 {
		o.MinSize = o.AvgSize / 4
	}
	if o.MaxSize == 0 {
		o.MaxSize = o.AvgSize * 4
	}
	return o
}

// Validate checks 64 <= MinSize <= AvgSize <= MaxSize <= MaxChunkSize, AvgSize
// a power of two.
func (o ChunkerOptions) Validate() error {
	switch {
	case o.AvgSize < 256 || bits.OnesCount(uint(o.AvgSize)) != 1:
		return fmt.Errorf("%w: chunker: average size %d is not a power of two >= 256", ErrInvalid, o.AvgSize)
	case o.MinSize < 64 || o.MinSize > o.AvgSize:
		return fmt.Errorf("%w: chunker: min size %d not in [64, %d]", ErrInvalid, o.MinSize, o.AvgSize)
	case o.MaxSize < o.AvgSize || o.MaxSize > MaxChunkSize:
		return fmt.Errorf("%w: chunker: max size %d not in [%d, %d]", ErrInvalid, o.MaxSize, o.AvgSize, MaxChunkSize)
	}
	return nil
}

// gear is FastCDC's table of 256 pseudo-random words, from splitmix64 with
// a fixed seed so cut points never change between builds.
var gear = func() (t [256]uint64) {
	x := uint64(0x6e69786361732121) // "nixcas!!"
	for i := range t {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		t[i] = z ^ (z >> 31)
	}
	return t
}()

// Cut returns the length of the first chunk of data, FastCDC with
// normalization level 2: below AvgSize a cut needs two more zero bits of the
// rolling gear hash than above it, which keeps sizes close to AvgSize. The
// hash's top bits are tested, so a cut depends on the 64 bytes before it.
// When len(data) < MaxSize and no cut point is found, Cut returns len(data):
// pass at least MaxSize bytes unless data is the end of the stream.
func (o ChunkerOptions) Cut(data []byte) int {
	n := len(data)
	if n <= o.MinSize {
		return n
	}
	if n > o.MaxSize {
		n = o.MaxSize
	}
	normal := o.AvgSize
	if normal > n {
		normal = n
	}
	b := bits.TrailingZeros(uint(o.AvgSize))
	maskS := ^uint64(0) << (64 - (b + 2))
	maskL := ^uint64(0) << (64 - (b - 2))
	var fp uint64
	i := o.MinSize
	for ; i < normal; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&maskS == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&maskL == 0 {
			return i + 1
		}
	}
	return n
}

// Chunker cuts a stream into content-defined chunks. It reuses one buffer
// for every stream it is Reset to, so keep one per goroutine.
type Chunker struct {
	opts  ChunkerOptions
	r     io.Reader
	buf   []byte
	start int // first unreturned byte in buf
	end   int // end of the data in buf
	eof   bool
}

// NewChunker returns a Chunker for opts, which must be valid (see
// ChunkerOptions.Validate).
func NewChunker(opts ChunkerOptions) *Chunker {
	return &Chunker{opts: opts, buf: make([]byte, 2*opts.MaxSize)}
}

// Reset makes c cut r from its start.
func (c *Chunker) Reset(r io.Reader) {
	c.r, c.start, c.end, c.eof = r, 0, 0, false
}

// Next returns the next chunk, or io.EOF after the last one. The slice is
// valid until the next call to Next or Reset. A stream of zero bytes has no
// chunks.
func (c *Chunker) Next() ([]byte, error) {
	if c.end-c.start < c.opts.MaxSize && !c.eof {
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	if c.start == c.end {
		return nil, io.EOF
	}
	n := c.opts.Cut(c.buf[c.start:c.end])
	chunk := c.buf[c.start : c.start+n]
	c.start += n
	return chunk, nil
}

func (c *Chunker) fill() error {
	copy(c.buf, c.buf[c.start:c.end])
	c.end -= c.start
	c.start = 0
	for c.end < len(c.buf) {
		n, err := c.r.Read(c.buf[c.end:])
		c.end += n
		if errors.Is(err, io.EOF) {
			c.eof = true
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}
