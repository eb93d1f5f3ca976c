package chunkstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
)

// segment is one segment of a stream, as a Source yields it.
type segment struct {
	data  []byte
	start bool
	dict  []byte
}

// segments is a Source over a list.
type segments struct {
	list []segment
	err  error // returned after the list, io.EOF when nil
}

func (s *segments) NextSegment() ([]byte, bool, []byte, error) {
	if len(s.list) == 0 {
		if s.err != nil {
			return nil, false, nil, s.err
		}
		return nil, false, nil, io.EOF
	}
	g := s.list[0]
	s.list = s.list[1:]
	return g.data, g.start, g.dict, nil
}

type testChunk struct {
	d    castore.Digest
	data []byte
}

func newChunk(data []byte) testChunk { return testChunk{castore.Hash(data), data} }

// binaryLike returns n bytes that compress somewhat, derived from seed.
func binaryLike(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]byte, n)
	for i := 0; i < n; {
		word := fmt.Appendf(nil, "sym%04d ", r.IntN(2000))
		i += copy(out[i:], word)
	}
	return out
}

// encode writes frames of chunks with their dictionaries, flushing a
// segment every flushEvery chunks, and returns the segments.
func encode(t *testing.T, frames [][]testChunk, dicts [][]byte, flushEvery int) []segment {
	t.Helper()
	w, err := NewWriter(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []segment
	for i, f := range frames {
		if err := w.Begin(dicts[i]); err != nil {
			t.Fatal(err)
		}
		start := true
		for j, c := range f {
			if err := w.Add(c.d, c.data); err != nil {
				t.Fatal(err)
			}
			if (j+1)%flushEvery == 0 && j+1 < len(f) {
				data, err := w.Flush()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, segment{data, start, dicts[i]})
				start = false
			}
		}
		data, err := w.End()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, segment{data, start, dicts[i]})
	}
	return out
}

// decodeAll reads every chunk of src.
func decodeAll(src Source) ([]testChunk, error) {
	r, err := NewReader(src)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []testChunk
	for {
		d, data, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, testChunk{d, bytes.Clone(data)})
	}
}

func TestRoundTrip(t *testing.T) {
	// Random bytes: incompressible alone, nearly free against a
	// dictionary holding them.
	old := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{1}).Read(old)
	changed := bytes.Clone(old)
	for i := 0; i < len(changed); i += 4096 {
		changed[i] ^= 0xff
	}
	var f1, f2, f3 []testChunk
	for off := 0; off < len(changed); off += 256 << 10 {
		f1 = append(f1, newChunk(changed[off:min(off+256<<10, len(changed))]))
	}
	f2 = []testChunk{newChunk(nil), newChunk([]byte("x")), newChunk(binaryLike(2, 100000))}
	f3 = []testChunk{newChunk(binaryLike(3, 5000))}
	frames := [][]testChunk{f1, f2, f3}
	tests := []struct {
		name       string
		dicts      [][]byte
		flushEvery int
	}{
		{"no dictionaries, one segment per frame", [][]byte{nil, nil, nil}, 1000},
		{"no dictionaries, a segment per chunk", [][]byte{nil, nil, nil}, 1},
		{"dictionaries", [][]byte{old, old[:1000], nil}, 3},
	}
	sizes := map[string]int{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			segs := encode(t, frames, tt.dicts, tt.flushEvery)
			for _, s := range segs {
				sizes[tt.name] += len(s.data)
			}
			got, err := decodeAll(&segments{list: segs})
			if err != nil {
				t.Fatal(err)
			}
			want := append(append(append([]testChunk{}, f1...), f2...), f3...)
			if len(got) != len(want) {
				t.Fatalf("%d chunks, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].d != want[i].d || !bytes.Equal(got[i].data, want[i].data) {
					t.Fatalf("chunk %d differs", i)
				}
			}
		})
	}
	// The dictionary (the unchanged original) must pay for itself.
	if a, b := sizes["dictionaries"], sizes["no dictionaries, one segment per frame"]; a*4 > b {
		t.Errorf("with the previous version as dictionary the stream has %d bytes, without %d: want at most a quarter", a, b)
	}
}

// rawFrame compresses content as one frame of its own (no dictionary).
func rawFrame(t *testing.T, content []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(content, nil)
}

func chunkRecord(d castore.Digest, length uint64, data []byte) []byte {
	out := append([]byte(nil), d[:]...)
	out = binary.AppendUvarint(out, length)
	return append(out, data...)
}

func TestReaderRefuses(t *testing.T) {
	c := newChunk(binaryLike(4, 70000))
	good := encode(t, [][]testChunk{{c, c}}, [][]byte{nil}, 1)
	if len(good) != 2 {
		t.Fatalf("%d segments", len(good))
	}
	flipped := bytes.Clone(good[0].data)
	flipped[len(flipped)/2] ^= 0x55
	broken := errors.New("connection lost")
	tests := []struct {
		name string
		src  *segments
		want error
	}{
		{"first segment starts no frame", &segments{list: []segment{{data: good[0].data}}}, castore.ErrCorrupt},
		{"corrupt bytes", &segments{list: []segment{{data: flipped, start: true}, good[1]}}, castore.ErrCorrupt},
		{"frame cut short", &segments{list: []segment{good[0]}}, castore.ErrCorrupt},
		{"frame cut short by the next frame", &segments{list: []segment{good[0], {data: good[0].data, start: true}}}, castore.ErrCorrupt},
		{"not zstd", &segments{list: []segment{{data: []byte("hello, this is not zstd"), start: true}}}, castore.ErrCorrupt},
		{"ends inside a chunk", &segments{list: []segment{{data: rawFrame(t, chunkRecord(c.d, 70000, c.data[:100])), start: true}}}, castore.ErrCorrupt},
		{"ends inside a digest", &segments{list: []segment{{data: rawFrame(t, c.d[:10]), start: true}}}, castore.ErrCorrupt},
		{"chunk over the size limit", &segments{list: []segment{{data: rawFrame(t, chunkRecord(c.d, castore.MaxChunkSize+1, nil)), start: true}}}, castore.ErrInvalid},
		{"window over the limit", &segments{list: []segment{{data: rawFrame(t, bytes.Repeat(chunkRecord(c.d, uint64(len(c.data)), c.data), 1000), zstd.WithWindowSize(2*MaxWindow)), start: true}}}, ErrLimit},
		{"dictionary over the limit", &segments{list: []segment{{data: good[0].data, start: true, dict: make([]byte, MaxWindow+1)}}}, ErrLimit},
		{"source fails", &segments{list: []segment{good[0]}, err: broken}, broken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(tt.src)
			t.Log(err)
			if !errors.Is(err, tt.want) {
				t.Fatalf("after %d chunks: error %v, want %v", len(got), err, tt.want)
			}
		})
	}
}

// TestReaderHostileAllocation feeds frames that claim huge windows and
// chunk lengths and checks the Reader allocates within its bounds.
func TestReaderHostileAllocation(t *testing.T) {
	var d castore.Digest
	// A frame header declaring a 1 TiB window: magic, descriptor with a
	// window descriptor byte and no content size.
	hugeWindow := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xd0 /* exponent 26+10 = 2^36 ... */}
	hostile := []*segments{
		{list: []segment{{data: hugeWindow, start: true}}},
		{list: []segment{{data: rawFrame(t, chunkRecord(d, castore.MaxChunkSize, nil)), start: true}}},
		{list: []segment{{data: rawFrame(t, chunkRecord(d, 1<<62, nil)), start: true}}},
	}
	for i, src := range hostile {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := decodeAll(src)
		runtime.ReadMemStats(&after)
		t.Logf("stream %d: %v, %d bytes allocated", i, err, after.TotalAlloc-before.TotalAlloc)
		if err == nil {
			t.Errorf("stream %d: decoded", i)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
			t.Errorf("stream %d (%v): allocated %d bytes", i, err, got)
		}
	}
}

func TestWriterRefuses(t *testing.T) {
	w, err := NewWriter(zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(castore.Digest{}, nil); err == nil {
		t.Error("Add outside a frame accepted")
	}
	if err := w.Begin(make([]byte, MaxWindow+1)); !errors.Is(err, ErrLimit) {
		t.Errorf("oversize dictionary: %v", err)
	}
	if err := w.Begin(nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Begin(nil); err == nil {
		t.Error("Begin inside a frame accepted")
	}
}
