//go:build cgo

package pebblestore

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
)

// TestCFrameSizeLimit: frames of at most cMaxFrame bytes are compressed
// by the C library, larger ones by the Go library (whose window covers
// them); either decodes back to the frame.
func TestCFrameSizeLimit(t *testing.T) {
	data := make([]byte, cMaxFrame+1<<20)
	for i := range data {
		data[i] = byte(i/7) ^ byte(i*2654435761>>29)&byte(i>>16)
	}
	for _, size := range []int{cMaxFrame, len(data)} {
		frame := data[:size]
		obj := compressFrame(zstd.SpeedDefault, frame, true)
		byGo := compressFrameWith(zstdEncodeGo, zstd.SpeedDefault, frame, true)
		if fromGo := bytes.Equal(obj, byGo); fromGo != (size > cMaxFrame) {
			t.Errorf("frame of %d bytes compressed by the Go library: %t, want %t", size, fromGo, size > cMaxFrame)
		}
		got, err := DecodeFrame(castore.Hash(obj), obj, nil)
		if err != nil || !bytes.Equal(got, frame) {
			t.Fatalf("frame of %d bytes: decoded %d bytes, %v; want it back", size, len(got), err)
		}
	}
}
