package chunkstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
)

const (
	// MaxWindow bounds the zstd window of a frame and the size of its
	// dictionary: the receiver holds at most about twice this per stream.
	MaxWindow = 32 << 20
	// MaxDictionaryChunks bounds the chunks a dictionary names.
	MaxDictionaryChunks = 1 << 16
	// SegmentBytes is the uncompressed size at which a Writer's user is
	// meant to flush a segment (Writer.Buffered).
	SegmentBytes = 1 << 20
	// dictID is the id of every frame's raw-content dictionary.
	dictID = 1
)

// DefaultLevel is the zstd level a Writer uses unless told otherwise: the
// level whose match finder reaches back across the whole window and
// dictionary (the faster levels of klauspost/compress look back a few
// MiB at most, so a dictionary of a previous version of a large file
// would hardly help them).
const DefaultLevel = zstd.SpeedBetterCompression

// Level returns the encoder level of a zstd level as the zstd command
// line numbers them (0: DefaultLevel).
func Level(zstdLevel int) zstd.EncoderLevel {
	if zstdLevel <= 0 {
		return DefaultLevel
	}
	return zstd.EncoderLevelFromZstd(zstdLevel)
}

// ErrLimit marks a stream that goes beyond a bound of this package (a
// frame window over MaxWindow, say).
var ErrLimit = errors.New("chunkstream: over a limit")

// Writer builds a chunk stream. It is not safe for concurrent use.
type Writer struct {
	enc      *zstd.Encoder
	out      bytes.Buffer
	buffered int
	inFrame  bool
	hdr      [castore.DigestSize + binary.MaxVarintLen64]byte
}

// NewWriter returns a Writer compressing at level (0: DefaultLevel).
func NewWriter(level zstd.EncoderLevel) (*Writer, error) {
	if level == 0 {
		level = DefaultLevel
	}
	w := &Writer{}
	enc, err := zstd.NewWriter(&w.out, zstd.WithEncoderLevel(level), zstd.WithWindowSize(MaxWindow),
		zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("chunkstream: %w", err)
	}
	w.enc = enc
	return w, nil
}

// Begin starts a frame whose history begins with dict (nil or empty: no
// dictionary), which must stay unchanged until the frame ends and be at
// most MaxWindow bytes. The frame before must have ended (End).
func (w *Writer) Begin(dict []byte) error {
	if w.inFrame {
		return errors.New("chunkstream: Begin before the previous frame ended")
	}
	if len(dict) > MaxWindow {
		return fmt.Errorf("%w: dictionary of %d bytes, at most %d", ErrLimit, len(dict), MaxWindow)
	}
	opt := zstd.WithEncoderDictDelete()
	if len(dict) > 0 {
		opt = zstd.WithEncoderDictRaw(dictID, dict)
	}
	w.out.Reset()
	if err := w.enc.ResetWithOptions(&w.out, opt); err != nil {
		return fmt.Errorf("chunkstream: %w", err)
	}
	w.inFrame, w.buffered = true, 0
	return nil
}

// Add appends chunk d, of bytes data, to the frame.
func (w *Writer) Add(d castore.Digest, data []byte) error {
	if !w.inFrame {
		return errors.New("chunkstream: Add outside a frame")
	}
	if len(data) > castore.MaxChunkSize {
		return fmt.Errorf("%w: chunk %s of %d bytes, at most %d", castore.ErrInvalid, d, len(data), castore.MaxChunkSize)
	}
	n := copy(w.hdr[:], d[:])
	n += binary.PutUvarint(w.hdr[n:], uint64(len(data)))
	if _, err := w.enc.Write(w.hdr[:n]); err != nil {
		return fmt.Errorf("chunkstream: %w", err)
	}
	if _, err := w.enc.Write(data); err != nil {
		return fmt.Errorf("chunkstream: %w", err)
	}
	w.buffered += n + len(data)
	return nil
}

// Buffered returns the uncompressed bytes added since the last segment.
func (w *Writer) Buffered() int { return w.buffered }

// Flush ends a segment within the frame and returns its bytes, which the
// caller owns.
func (w *Writer) Flush() ([]byte, error) {
	if err := w.enc.Flush(); err != nil {
		return nil, fmt.Errorf("chunkstream: %w", err)
	}
	return w.take(), nil
}

// End ends the frame and returns the bytes of its last segment, which the
// caller owns.
func (w *Writer) End() ([]byte, error) {
	if !w.inFrame {
		return nil, errors.New("chunkstream: End outside a frame")
	}
	w.inFrame = false
	if err := w.enc.Close(); err != nil {
		return nil, fmt.Errorf("chunkstream: %w", err)
	}
	return w.take(), nil
}

func (w *Writer) take() []byte {
	w.buffered = 0
	out := bytes.Clone(w.out.Bytes())
	w.out.Reset()
	return out
}

// Source yields the segments of a stream, in order.
type Source interface {
	// NextSegment returns the bytes of the next segment and whether it
	// starts a frame; for a segment that does, dict is that frame's
	// dictionary (nil: none), at most MaxWindow bytes, which the Reader
	// keeps until the frame ends. It returns io.EOF after the last
	// segment; its errors end the stream as they are.
	NextSegment() (data []byte, start bool, dict []byte, err error)
}

// Reader takes a chunk stream apart. It is not safe for concurrent use.
type Reader struct {
	src     Source
	dec     *zstd.Decoder
	seg     segmentReader
	inFrame bool
	buf     []byte
	hdr     [castore.DigestSize]byte
}

// NewReader returns a Reader of the stream src yields. Close it to free
// its decoder.
func NewReader(src Source) (*Reader, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow),
		zstd.WithDecoderMaxMemory(MaxWindow), zstd.WithDecoderLowmem(true))
	if err != nil {
		return nil, fmt.Errorf("chunkstream: %w", err)
	}
	return &Reader{src: src, dec: dec, seg: segmentReader{src: src}}, nil
}

// Close frees the decoder. It is safe to call twice.
func (r *Reader) Close() {
	if r.dec != nil {
		r.dec.Close()
		r.dec = nil
	}
}

// Next returns the next chunk: its digest and bytes, valid until the next
// call. It returns io.EOF at the end of the stream. A stream that does
// not decode or ends inside a chunk is an error wrapping castore.ErrCorrupt;
// a chunk length over castore.MaxChunkSize one wrapping castore.ErrInvalid;
// a frame beyond MaxWindow one wrapping ErrLimit.
func (r *Reader) Next() (castore.Digest, []byte, error) {
	var d castore.Digest
	for {
		if !r.inFrame {
			if err := r.startFrame(); err != nil {
				return d, nil, err
			}
		}
		n, err := io.ReadFull(r.dec, r.hdr[:])
		if n == 0 && err == io.EOF {
			// The frame ended after a whole chunk (or had none).
			if r.seg.err != nil && r.seg.err != io.EOF && r.seg.err != errFrameEnd {
				return d, nil, r.seg.err
			}
			r.inFrame = false
			continue
		}
		if err != nil {
			return d, nil, r.streamErr(err, "a chunk's digest")
		}
		copy(d[:], r.hdr[:])
		size, err := binary.ReadUvarint(byteReader{r.dec})
		if err != nil {
			return d, nil, r.streamErr(err, fmt.Sprintf("the length of chunk %s", d))
		}
		if size > castore.MaxChunkSize {
			return d, nil, fmt.Errorf("%w: chunkstream: chunk %s of %d bytes, at most %d", castore.ErrInvalid, d, size, castore.MaxChunkSize)
		}
		// Grow the buffer as the bytes arrive, never by a length alone.
		r.buf = r.buf[:0]
		for len(r.buf) < int(size) {
			n := min(int(size)-len(r.buf), 1<<20)
			r.buf = slices.Grow(r.buf, n)
			if _, err := io.ReadFull(r.dec, r.buf[len(r.buf):len(r.buf)+n]); err != nil {
				return d, nil, r.streamErr(err, fmt.Sprintf("chunk %s of %d bytes", d, size))
			}
			r.buf = r.buf[:len(r.buf)+n]
		}
		return d, r.buf, nil
	}
}

// startFrame moves to the next frame, or reports io.EOF at the end.
func (r *Reader) startFrame() error {
	start, dict, err := r.seg.nextFrame()
	if err != nil {
		return err
	}
	if !start {
		return fmt.Errorf("%w: chunkstream: the stream does not begin with a frame", castore.ErrCorrupt)
	}
	if len(dict) > MaxWindow {
		return fmt.Errorf("%w: dictionary of %d bytes, at most %d", ErrLimit, len(dict), MaxWindow)
	}
	opt := zstd.WithDecoderDictDelete()
	if len(dict) > 0 {
		opt = zstd.WithDecoderDictRaw(dictID, dict)
	}
	if err := r.dec.ResetWithOptions(&r.seg, opt); err != nil {
		return r.streamErr(err, "a frame header")
	}
	r.inFrame = true
	return nil
}

// streamErr describes an error met reading what.
func (r *Reader) streamErr(err error, what string) error {
	if r.seg.err != nil && r.seg.err != io.EOF && r.seg.err != errFrameEnd {
		return r.seg.err // the source failed: say so, not that the stream is corrupt
	}
	switch {
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return fmt.Errorf("%w: chunkstream: reading %s: %v (at most %d bytes)", ErrLimit, what, err, MaxWindow)
	case err == io.EOF, err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: chunkstream: the frame ends inside %s", castore.ErrCorrupt, what)
	}
	return fmt.Errorf("%w: chunkstream: reading %s: %v", castore.ErrCorrupt, what, err)
}

// errFrameEnd is what segmentReader reports at the end of a frame.
var errFrameEnd = io.EOF

// segmentReader reads the bytes of one frame's segments, ending at the
// segment that starts the next frame, which it keeps for nextFrame.
type segmentReader struct {
	src     Source
	data    []byte
	pending bool // data, start and dict hold a segment not yet begun
	start   bool
	dict    []byte
	err     error // set once the source failed or ended
}

// nextFrame returns the start flag and dictionary of the next segment,
// making its data the next bytes read, or io.EOF at the end of the stream.
func (s *segmentReader) nextFrame() (bool, []byte, error) {
	if !s.pending {
		if s.err != nil {
			return false, nil, s.err
		}
		if err := s.fetch(); err != nil {
			return false, nil, err
		}
	}
	s.pending = false
	return s.start, s.dict, nil
}

func (s *segmentReader) fetch() error {
	data, start, dict, err := s.src.NextSegment()
	if err != nil {
		s.err = err
		return err
	}
	s.data, s.start, s.dict, s.pending = data, start, dict, true
	return nil
}

func (s *segmentReader) Read(p []byte) (int, error) {
	for len(s.data) == 0 {
		if s.err != nil {
			return 0, io.EOF
		}
		if err := s.fetch(); err != nil {
			return 0, io.EOF
		}
		if s.start {
			return 0, errFrameEnd // kept pending for nextFrame
		}
		s.pending = false
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

// byteReader reads one byte at a time from a decoder.
type byteReader struct{ r io.Reader }

func (b byteReader) ReadByte() (byte, error) {
	var c [1]byte
	_, err := io.ReadFull(b.r, c[:])
	return c[0], err
}
