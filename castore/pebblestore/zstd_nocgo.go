//go:build !cgo

package pebblestore

// FrameCompressor names the zstd library that compresses frames in this
// build: the Go one, cgo being off (see zstd_cgo.go).
const FrameCompressor = "Go"

// zstdEncode is the zstdEncoder frames are compressed with.
var zstdEncode zstdEncoder = zstdEncodeGo

// frameEncoders are the encoders of this build, by name, for benchmarks.
var frameEncoders = map[string]zstdEncoder{"Go": zstdEncodeGo}
