//go:build cgo

package pebblestore

import (
	"fmt"
	"sync"

	ddzstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// FrameCompressor names the zstd library that compresses frames in this
// build: the reference C library when cgo is on (here), the Go one
// otherwise (zstd_nocgo.go). Both write standard zstd frames. Reads decode
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

// zstdEncodeC is the zstdEncoder of the C library. The library sizes the
// window to the frame and the level (at most 4 MiB at level 11), so
// window is not needed.
func zstdEncodeC(level zstd.EncoderLevel, _ int, src, dst []byte) []byte {
	lvl, ok := cLevels[level]
	if !ok {
		panic(fmt.Sprintf("pebblestore: zstd level %d", level)) // FrameOptions.validate refuses it
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
		// Only when the library cannot allocate its tables: the
		// destination has the room zstd's bound promises.
		panic(fmt.Sprintf("pebblestore: zstd C library: %v", err))
	}
	return append(dst, out...)
}
