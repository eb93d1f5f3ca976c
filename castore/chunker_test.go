package castore

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// chunkAll cuts data with a Chunker reading through small reads, to
// exercise buffer refills.
func chunkAll(t testing.TB, opts ChunkerOptions, data []byte) [][]byte {
	c := NewChunker(opts)
	c.Reset(io.LimitReader(bytes.NewReader(data), int64(len(data))))
	var out [][]byte
	for {
		b, err := c.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(b))
	}
}

func checkChunks(t testing.TB, opts ChunkerOptions, data []byte, chunks [][]byte) {
	t.Helper()
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("chunks join to %d bytes, input has %d", len(got), len(data))
	}
	for i, c := range chunks {
		if len(c) > opts.MaxSize {
			t.Fatalf("chunk %d: %d bytes > max %d", i, len(c), opts.MaxSize)
		}
		if len(c) < opts.MinSize && i != len(chunks)-1 {
			t.Fatalf("chunk %d of %d: %d bytes < min %d", i, len(chunks), len(c), opts.MinSize)
		}
		if len(c) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
	}
}

func TestChunkerSizes(t *testing.T) {
	opts := DefaultChunkerOptions
	data := randomBytes(1, 32<<20)
	chunks := chunkAll(t, opts, data)
	checkChunks(t, opts, data, chunks)
	avg := len(data) / len(chunks)
	// Normalized FastCDC keeps the mean near AvgSize (plus MinSize skipped).
	if avg < opts.AvgSize/2 || avg > 2*opts.AvgSize {
		t.Errorf("mean chunk size %d, want near %d", avg, opts.AvgSize)
	}
}

func TestChunkerShiftResistance(t *testing.T) {
	opts := DefaultChunkerOptions
	a := randomBytes(2, 8<<20)
	b := append(append(bytes.Clone(a[:4<<20]), []byte("inserted bytes")...), a[4<<20:]...)
	seen := map[Digest]bool{}
	for _, c := range chunkAll(t, opts, a) {
		seen[Hash(c)] = true
	}
	cb := chunkAll(t, opts, b)
	fresh := 0
	for _, c := range cb {
		if !seen[Hash(c)] {
			fresh++
		}
	}
	if fresh > 3 {
		t.Errorf("an insertion changed %d of %d chunks, want at most 3", fresh, len(cb))
	}
}

func TestChunkerOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts ChunkerOptions
		ok   bool
	}{
		{DefaultChunkerOptions, true},
		{ChunkerOptions{AvgSize: 16 << 10}.EnsureDefaults(), true},
		{ChunkerOptions{MinSize: 1024, AvgSize: 3000, MaxSize: 9000}, false},
		{ChunkerOptions{MinSize: 32, AvgSize: 1024, MaxSize: 4096}, false},
		{ChunkerOptions{MinSize: 4096, AvgSize: 1024, MaxSize: 4096}, false},
		{ChunkerOptions{MinSize: 256, AvgSize: 1024, MaxSize: 512}, false},
		{ChunkerOptions{MinSize: 256, AvgSize: 1024, MaxSize: MaxChunkSize + 1}, false},
	} {
		if err := tc.opts.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.opts, err, tc.ok)
		}
	}
}

// FuzzChunker: whatever the input and sizes, chunks join back to the input
// and respect the size limits, and Cut agrees with the streaming Chunker.
func FuzzChunker(f *testing.F) {
	f.Add([]byte(nil), uint8(0))
	f.Add([]byte("hello"), uint8(1))
	f.Add(randomBytes(3, 5000), uint8(2))
	f.Add(bytes.Repeat([]byte{0}, 9000), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, shift uint8) {
		avg := 256 << (shift % 4)
		opts := ChunkerOptions{AvgSize: avg}.EnsureDefaults()
		chunks := chunkAll(t, opts, data)
		checkChunks(t, opts, data, chunks)
		rest := data
		for i, c := range chunks {
			if n := opts.Cut(rest); n != len(c) {
				t.Fatalf("chunk %d: Cut says %d bytes, Chunker %d", i, n, len(c))
			}
			rest = rest[len(c):]
		}
	})
}
