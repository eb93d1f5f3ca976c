package pebblestore

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
)

// BenchmarkCompressFrame compresses hot frames (DefaultFrameOptions.Size)
// with each zstd library of the build (C and Go with cgo, Go without) at
// each level, with and without the x86 call filter, on one goroutine, as
// the packer does per frame, and reports the compressed size as a share
// of the input (stored/decoded). The input is the file named by
// NIXCAS_BENCH_NAR (a NAR, say nix-store --dump of a Go release), else
// 64 MiB of synthetic data.
func BenchmarkCompressFrame(b *testing.B) {
	data := benchFrameInput(b)
	frame := DefaultFrameOptions.Size
	for _, name := range slices.Sorted(maps.Keys(frameEncoders)) {
		for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression} {
			for _, filter := range []bool{false, true} {
				b.Run(fmt.Sprintf("zstd=%s/level=%s/filter=%t", name, level, filter), func(b *testing.B) {
					b.SetBytes(int64(len(data)))
					var stored int
					for range b.N {
						stored = 0
						for off := 0; off < len(data); off += frame {
							stored += len(compressFrameWith(frameEncoders[name], level, data[off:min(off+frame, len(data))], filter))
						}
					}
					b.ReportMetric(float64(stored)/float64(len(data)), "stored/decoded")
				})
			}
		}
	}
}

// BenchmarkDecodeFrame decodes hot frames of the same input, compressed
// at the default level by each zstd library of the build, with and
// without the x86 call filter, on one goroutine: the cost of a frame's
// first read. (Reads decode with the Go library whoever compressed.)
func BenchmarkDecodeFrame(b *testing.B) {
	data := benchFrameInput(b)
	frame := DefaultFrameOptions.Size
	for _, name := range slices.Sorted(maps.Keys(frameEncoders)) {
		for _, filter := range []bool{false, true} {
			b.Run(fmt.Sprintf("zstd=%s/filter=%t", name, filter), func(b *testing.B) {
				objs, names := benchFrames(data, frameEncoders[name], filter)
				b.SetBytes(int64(len(data)))
				buf := make([]byte, 0, frame)
				for b.Loop() {
					for i, obj := range objs {
						var err error
						if buf, err = DecodeFrame(names[i], obj, buf[:0]); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkDecodeFrameParallel decodes the call-filtered hot frames of
// the same input, compressed by the build's default library, on every
// core at once (each goroutine takes the next frame not yet decoded): the
// most a first render could get from this machine's cores if it did
// nothing but decode, to set beside nix-store --dump of the same tree.
func BenchmarkDecodeFrameParallel(b *testing.B) {
	data := benchFrameInput(b)
	frame := DefaultFrameOptions.Size
	objs, names := benchFrames(data, zstdEncode, true)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var next atomic.Int64
		var g errgroup.Group
		for range runtime.GOMAXPROCS(0) {
			g.Go(func() error {
				buf := make([]byte, 0, frame)
				for {
					i := int(next.Add(1) - 1)
					if i >= len(objs) {
						return nil
					}
					var err error
					if buf, err = DecodeFrame(names[i], objs[i], buf[:0]); err != nil {
						return err
					}
				}
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchFrames cuts data into hot frames (DefaultFrameOptions.Size),
// compressed with encode at the default level, and returns them with
// their names.
func benchFrames(data []byte, encode zstdEncoder, filter bool) (objs [][]byte, names []castore.Digest) {
	frame := DefaultFrameOptions.Size
	for off := 0; off < len(data); off += frame {
		obj := compressFrameWith(encode, zstd.SpeedDefault, data[off:min(off+frame, len(data))], filter)
		objs = append(objs, obj)
		names = append(names, castore.Hash(obj))
	}
	return objs, names
}

// benchFrameInput is the input of the frame benchmarks: the file named by
// NIXCAS_BENCH_NAR (a NAR, say nix-store --dump of a Go release), else
// 64 MiB of synthetic data.
func benchFrameInput(b *testing.B) []byte {
	if p := os.Getenv("NIXCAS_BENCH_NAR"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	data := make([]byte, 64<<20)
	for i := range data {
		// Half repetitive, half noise: something between text and
		// machine code for a compressor.
		data[i] = byte(i/7) ^ byte(i*2654435761>>29)&byte(i>>16)
	}
	return data
}
