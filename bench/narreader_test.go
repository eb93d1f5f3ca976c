package bench

import (
	"bytes"
	"io"
	"testing"

	gonar "github.com/nix-community/go-nix/pkg/nar"

	"github.com/nixcas/nixcas/narrender"
)

// Parsing a NAR and reading every file's contents: narrender.Reader (which
// also refuses what Nix never writes and names byte offsets in errors)
// beside go-nix's nar.Reader.

func BenchmarkNARReaderNarrender(b *testing.B) {
	nar := benchNAR(b)
	b.SetBytes(int64(len(nar)))
	buf := make([]byte, 64<<10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := narrender.NewReader(bytes.NewReader(nar))
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkNARReaderGoNix(b *testing.B) {
	nar := benchNAR(b)
	b.SetBytes(int64(len(nar)))
	buf := make([]byte, 64<<10)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := gonar.NewReader(bytes.NewReader(nar))
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
