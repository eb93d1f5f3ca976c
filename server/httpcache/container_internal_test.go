package httpcache

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// sliceRender renders ranges of nar, counting the bytes it renders.
func sliceRender(nar []byte, rendered *uint64) renderFunc {
	return func(w io.Writer, off, n uint64) error {
		*rendered += n
		_, err := w.Write(nar[off : off+n])
		return err
	}
}

// containerSizes are NAR sizes around the block boundaries of f.
func containerSizes(f *storedFormat) []uint64 {
	b := f.block
	return []uint64{1, 3, 8, 4093, b - 1, b, b + 1, 2*b - 1, 2 * b, 2*b + 1, 3*b + 7}
}

// body returns the whole body f makes of nar.
func body(t *testing.T, f *storedFormat, nar []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	var rendered uint64
	size := f.size(uint64(len(nar)))
	if err := f.writeRange(&out, uint64(len(nar)), 0, size, sliceRender(nar, &rendered)); err != nil {
		t.Fatal(err)
	}
	if uint64(out.Len()) != size {
		t.Fatalf("%s of %d NAR bytes: body of %d bytes, size says %d", f.compression, len(nar), out.Len(), size)
	}
	if rendered != uint64(len(nar)) {
		t.Fatalf("%s of %d NAR bytes: rendered %d NAR bytes for the whole body", f.compression, len(nar), rendered)
	}
	return out.Bytes()
}

// goDecoders decode each stored format with a Go package.
var goDecoders = map[string]func(io.Reader) (io.Reader, error){
	"xz": func(r io.Reader) (io.Reader, error) { return xz.NewReader(r) },
	"zstd": func(r io.Reader) (io.Reader, error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	},
	"br":   func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
	"gzip": func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
	"lz4":  func(r io.Reader) (io.Reader, error) { return lz4.NewReader(r), nil },
}

// toolDecoders decode each stored format with the format's own program
// (installed by scripts/test-deps.sh).
var toolDecoders = map[string][]string{
	"xz":   {"xz", "-d", "-c"},
	"zstd": {"zstd", "-d", "-c"},
	"br":   {"brotli", "-d", "-c"},
	"gzip": {"gzip", "-d", "-c"},
	"lz4":  {"lz4", "-d", "-c"},
}

func TestStoredFormatsDecode(t *testing.T) {
	for name, f := range storedFormats {
		t.Run(name, func(t *testing.T) {
			if f.compression != name {
				t.Fatalf("format under %q serves %q", name, f.compression)
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			for _, n := range containerSizes(f) {
				nar := make([]byte, n)
				for i := range nar {
					nar[i] = byte(rng.Uint32())
				}
				b := body(t, f, nar)

				r, err := goDecoders[name](bytes.NewReader(b))
				if err != nil {
					t.Fatalf("%d bytes: Go decoder: %v", n, err)
				}
				got, err := io.ReadAll(r)
				if err != nil || !bytes.Equal(got, nar) {
					t.Fatalf("%d bytes: Go decoder gave %d bytes (equal: %v), error %v", n, len(got), bytes.Equal(got, nar), err)
				}

				tool := toolDecoders[name]
				cmd := exec.CommandContext(t.Context(), tool[0], tool[1:]...)
				cmd.Stdin = bytes.NewReader(b)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				got, err = cmd.Output()
				if err != nil || !bytes.Equal(got, nar) || stderr.Len() > 0 {
					t.Fatalf("%d bytes: %s gave %d bytes (equal: %v), error %v, stderr %q", n, tool[0], len(got), bytes.Equal(got, nar), err, stderr.String())
				}
			}
		})
	}
}

// TestStoredFormatsRange checks that any range of a body is the same
// slice of the whole body, and that it renders only the NAR under it
// (gzip's trailer aside, which needs the whole NAR's CRC).
func TestStoredFormatsRange(t *testing.T) {
	for name, f := range storedFormats {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, uint64(len(name))))
			for _, n := range []uint64{5, f.block, 2*f.block + 3} {
				nar := make([]byte, n)
				for i := range nar {
					nar[i] = byte(rng.Uint32())
				}
				whole := body(t, f, nar)
				size := uint64(len(whole))
				ranges := [][2]uint64{{0, 1}, {size - 1, 1}, {0, size}, {1, size - 2}}
				hdr := uint64(len(f.header(nil, n)))
				for _, at := range []uint64{hdr, hdr + f.blockHeaderLen, hdr + f.blockHeaderLen + f.block} {
					for _, d := range []uint64{0, 1, 2} {
						if at >= d && at-d < size {
							ranges = append(ranges, [2]uint64{at - d, min(3, size-(at-d))})
						}
					}
				}
				for range 200 {
					off := rng.Uint64N(size)
					ranges = append(ranges, [2]uint64{off, 1 + rng.Uint64N(size-off)})
				}
				for _, rg := range ranges {
					off, k := rg[0], rg[1]
					var out bytes.Buffer
					var rendered uint64
					if err := f.writeRange(&out, n, off, k, sliceRender(nar, &rendered)); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(out.Bytes(), whole[off:off+k]) {
						t.Fatalf("NAR of %d bytes, range %d+%d: got %d bytes, not the slice of the whole body", n, off, k, out.Len())
					}
					if !f.needsCRC && rendered > k+1 {
						t.Fatalf("NAR of %d bytes, range %d+%d: rendered %d NAR bytes", n, off, k, rendered)
					}
				}
			}
		})
	}
}

// TestStoredFormatsRefuseDamage makes sure the decoders check what the
// framing claims: a body cut short or with a damaged header is an error,
// so the tests above could fail.
func TestStoredFormatsRefuseDamage(t *testing.T) {
	nar := bytes.Repeat([]byte("nix-archive-1"), 20000)
	for name, f := range storedFormats {
		t.Run(name, func(t *testing.T) {
			whole := body(t, f, nar)
			cases := map[string][]byte{
				"truncated":      whole[:len(whole)-1],
				"block header":   flip(whole, len(f.header(nil, uint64(len(nar))))+1),
				"cut mid-blocks": whole[:len(whole)/2],
			}
			for cname, b := range cases {
				t.Run(cname, func(t *testing.T) {
					r, err := goDecoders[name](bytes.NewReader(b))
					if err == nil {
						var got []byte
						got, err = io.ReadAll(r)
						if err == nil && !bytes.Equal(got, nar) {
							err = fmt.Errorf("decoded %d bytes that differ", len(got))
						}
					}
					if err == nil {
						t.Fatalf("%s body decoded without error", cname)
					}
				})
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x80
	return c
}

// BenchmarkStoredFormats measures framing a 64 MiB NAR held in memory
// into each container (bytes/s of NAR), and bzip2 compressing it as
// serveBzip2 does, for comparison.
func BenchmarkStoredFormats(b *testing.B) {
	nar := make([]byte, 64<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(nar); i += 4096 {
		// Half random, half text: neither all compressible nor not at all.
		for j := i; j < i+2048; j++ {
			nar[j] = byte(rng.Uint32())
		}
		copy(nar[i+2048:i+4096], bytes.Repeat([]byte("nix-archive-1 "), 147))
	}
	render := func(w io.Writer, off, n uint64) error {
		_, err := w.Write(nar[off : off+n])
		return err
	}
	for name, f := range storedFormats {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(nar)))
			size := f.size(uint64(len(nar)))
			for b.Loop() {
				if err := f.writeRange(io.Discard, uint64(len(nar)), 0, size, render); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("bzip2-compressed", func(b *testing.B) {
		b.SetBytes(int64(len(nar)))
		for b.Loop() {
			zw, err := bzip2.NewWriter(io.Discard, &bzip2.WriterConfig{Level: bzip2.BestSpeed})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := zw.Write(nar); err != nil {
				b.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
