package wrap_test

import (
	"context"
	"testing"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/castore/wrap"
)

// BenchmarkGetChunk reads a 64 KiB chunk from memory bare and through
// each wrapper (ReadThrough: found in local), to show what a wrapper
// costs a read.
func BenchmarkGetChunk(b *testing.B) {
	m := new(castore.MemoryStore)
	data := castoretest.RandomBytes(1, 64<<10)
	d := castoretest.MustPutChunk(b, m, data)
	metrics, err := wrap.NewMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	retrying, err := wrap.Retrying(m, wrap.RetryOptions{Transient: func(error) bool { return false }})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		s    castore.ChunkReader
	}{
		{"Memory", m},
		{"Counting", wrap.Counting(m, metrics, "bench")},
		{"ReadOnly", wrap.ReadOnly(m)},
		{"Retrying", retrying},
		{"ReadThrough", wrap.ReadThrough(m, new(castore.MemoryStore))},
		{"Verifying", castore.Verifying(m)},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			buf := make([]byte, 0, len(data))
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var err error
				if buf, err = c.s.GetChunk(ctx, d, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
