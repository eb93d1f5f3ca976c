//go:build cgo

package pebblestore

import (
	"sync"

	ddzstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// FrameCompressor names the zstd library that compresses frames in this
// build: the reference C library when cgo is on (here; frames of at most
// cMaxFrame), the Go one otherwise (zstd_nocgo.go). Both write standard
// zstd frames. Reads decode
// every frame with the Go library: the C one decoded the go1.22.0 frames
// 10 to 15% faster alone, but renders were no faster with it
// (BenchmarkRenderDecoding and BenchmarkRenderFirst, two runs each way).
const FrameCompressor = "C"

// zstdEncode is the zstdEncoder frames are compressed with.
var zstdEncode zstdEncoder = zstdEncodeC

// frameEncoders are the encoders of this build, by name, for benchmarks.
var frameEncoders = map[string]zstdEncoder{"C": zstdEncodeC, "Go": zstdEncodeGo}

// cLevels maps the store's levels to the C library's: the levels the Go
// library's are modelled on. On the call-filtered 4 MiB frames of the
// go1.22.0 NAR (one core; `NIXCAS_BENCH_NAR=FILE go test -run '^$' -bench
// BenchmarkCompressFrame ./castore/pebblestore`), stored/decoded and
// MB/s, C against Go: fastest 0.3265 at 390 against 0.3237 at 242;
// default 0.2986 at 275 against 0.3022 at 184; better 0.2746 at 91
// against 0.2844 at 110; best 0.2620 at 41 against 0.2663 at 20.
var cLevels = map[zstd.EncoderLevel]int{
	zstd.SpeedFastest:           1,
	zstd.SpeedDefault:           3,
	zstd.SpeedBetterCompression: 7,
	zstd.SpeedBestCompression:   11,
}

// cContexts are the C library's compression contexts, reused: each keeps
// the tables of the frame before.
var cContexts sync.Pool // of ddzstd.Ctx

// cScratch holds a frame's compressed bytes until they are appended to
// the caller's buffer: the library writes into a buffer of the worst-case
// size, which would otherwise be allocated for every frame.
var cScratch sync.Pool // of *[]byte

// cMaxFrame is the largest frame the C library compresses; larger ones go
// to the Go library. The C library's window is its level's (512 KiB at
// level 1, 2 MiB at 3 and 7, 4 MiB at 11), where the Go library's covers
// the frame (up to maxFrameWindow): on the call-filtered go1.22.0 NAR
// (stored/decoded, C against Go) C stored less at the default and best
// levels in frames of 1, 4 and 8 MiB (8 MiB: 0.2977 against 0.2985 and
// 0.2528 against 0.2533) but more in frames of 16 MiB (0.2974 against
// 0.2969 and 0.2479 against 0.2446).
const cMaxFrame = 8 << 20

// zstdEncodeC is the zstdEncoder of the C library for frames of at most
// cMaxFrame bytes, of the Go library for larger ones (window is only
// theirs) and should the C library fail (it fails only when it cannot
// allocate its tables).
func zstdEncodeC(level zstd.EncoderLevel, window int, src, dst []byte) []byte {
	lvl, ok := cLevels[level]
	if !ok || len(src) > cMaxFrame {
		return zstdEncodeGo(level, window, src, dst)
	}
	c, _ := cContexts.Get().(ddzstd.Ctx)
	if c == nil {
		c = ddzstd.NewCtx()
	}
	defer cContexts.Put(c)
	buf, _ := cScratch.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer cScratch.Put(buf)
	if bound := ddzstd.CompressBound(len(src)); cap(*buf) < bound {
		*buf = make([]byte, bound)
	}
	out, err := c.CompressLevel(*buf, src, lvl)
	if err != nil {
		return zstdEncodeGo(level, window, src, dst)
	}
	return append(dst, out...)
}
