package bench

import (
	"testing"

	zeebo "github.com/zeebo/blake3"
	luke "lukechampine.com/blake3"

	"github.com/nixcas/nixcas/castore"
)

// The two BLAKE3 implementations on 64 KiB chunks. castore.Hash uses one of
// them (castore.HashImplementation); build with -tags blake3luke to switch
// and compare BenchmarkIngest and BenchmarkRender end to end.

func benchmarkHash(b *testing.B, sum func([]byte) [32]byte) {
	data := make([]byte, 64<<10)
	castoreRandom(data, 1)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		sum(data)
	}
}

func BenchmarkHashZeebo(b *testing.B) { benchmarkHash(b, zeebo.Sum256) }

func BenchmarkHashLukechampine(b *testing.B) {
	benchmarkHash(b, func(d []byte) [32]byte { return luke.Sum256(d) })
}

func BenchmarkHashCastore(b *testing.B) {
	b.Logf("castore.Hash uses %s", castore.HashImplementation)
	benchmarkHash(b, func(d []byte) [32]byte { return castore.Hash(d) })
}
