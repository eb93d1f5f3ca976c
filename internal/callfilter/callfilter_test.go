package callfilter

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// reference is the filter written plainly, byte by byte: Encode and
// Decode must make exactly its choices.
func reference(b []byte, encode bool) {
	for i := 0; i+5 <= len(b); {
		if b[i] != 0xE8 {
			i++
			continue
		}
		v := int32(binary.LittleEndian.Uint32(b[i+1:]))
		if v >= -span && v < span {
			pos := int32(i + 5)
			if !encode {
				pos = -pos
			}
			w := (v+pos+span)&(2*span-1) - span
			binary.LittleEndian.PutUint32(b[i+1:], uint32(w))
		}
		i += 5
	}
}

// codeLike returns n bytes dense in 0xE8 bytes, zeros and small
// displacements near the buffer's ends, where the rewrite's edge cases
// are.
func codeLike(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		switch rng.IntN(8) {
		case 0, 1:
			b[i] = 0xE8
		case 2:
			b[i] = 0
		case 3:
			b[i] = 0xFF
		default:
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		data := codeLike(rng, rng.IntN(4096))
		b := bytes.Clone(data)
		Encode(b)
		want := bytes.Clone(data)
		reference(want, true)
		if !bytes.Equal(b, want) {
			t.Fatalf("%d bytes: Encode differs from the reference filter", len(data))
		}
		Decode(b)
		if !bytes.Equal(b, data) {
			t.Fatalf("%d bytes: Decode(Encode(b)) != b", len(data))
		}
	}
}

func TestCallsBecomeEqual(t *testing.T) {
	// Three calls of the function at 0x1000 from three places: distinct
	// bytes before, the same five bytes after.
	code := make([]byte, 0x2000)
	for _, at := range []int{0x100, 0x1800, 0x1F00} {
		code[at] = 0xE8
		binary.LittleEndian.PutUint32(code[at+1:], uint32(int32(0x1000-(at+5))))
	}
	Encode(code)
	for _, at := range []int{0x100, 0x1800, 0x1F00} {
		if got := binary.LittleEndian.Uint32(code[at+1:]); got != 0x1000 {
			t.Errorf("call at %#x: operand %#x after Encode, want 0x1000", at, got)
		}
	}
}

func TestShortAndFarLeftAlone(t *testing.T) {
	for _, b := range [][]byte{nil, {0xE8}, {0xE8, 1, 2, 3}, {1, 2, 0xE8, 1, 2, 3}} {
		in := bytes.Clone(b)
		Encode(in)
		if !bytes.Equal(in, b) {
			t.Errorf("% x: an operand cut short was rewritten to % x", b, in)
		}
	}
	far := []byte{0xE8, 0, 0, 0, 0x7F} // displacement 0x7F000000, beyond span
	in := bytes.Clone(far)
	Encode(in)
	if !bytes.Equal(in, far) {
		t.Errorf("a displacement beyond ±16 MiB was rewritten: % x", in)
	}
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0xE8, 1, 0, 0, 0, 0xE8, 0xE8, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		b := bytes.Clone(data)
		Encode(b)
		want := bytes.Clone(data)
		reference(want, true)
		if !bytes.Equal(b, want) {
			t.Fatal("Encode differs from the reference filter")
		}
		Decode(b)
		if !bytes.Equal(b, data) {
			t.Fatal("Decode(Encode(b)) != b")
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	data := codeLike(rand.New(rand.NewPCG(5, 6)), 1<<20)
	// About one byte in 60 is 0xE8 in x86-64 code; codeLike's quarter
	// would measure a worst case. Thin them out.
	for i := range data {
		if data[i] == 0xE8 && i%16 != 0 {
			data[i] = 0x90
		}
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		Encode(data)
	}
}
