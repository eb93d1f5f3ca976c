package httpcache

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Magic numbers of the formats a NAR file may come in.
var (
	narMagic   = []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-arch")
	xzMagic    = []byte("\xfd7zXZ\x00")
	zstdMagic  = []byte("\x28\xb5\x2f\xfd")
	bzip2Magic = []byte("BZh")
	gzipMagic  = []byte("\x1f\x8b")
	lz4Magic   = []byte("\x04\x22\x4d\x18")
)

// maxZstdWindow bounds the memory a zstd stream can make the decoder take.
const maxZstdWindow = 128 << 20

// decompress returns a reader of the NAR inside a NAR file, recognising
// the compression by its magic number: uncompressed, xz, zstd, bzip2, gzip
// or lz4. Brotli has no magic number: a file that matches none of them is
// read as brotli when compression (the narinfo's Compression, or "br" for a
// .br file name) says so, and refused otherwise. Close the result; it does
// not close r.
func decompress(r io.Reader, compression string) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(narMagic))
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(head, narMagic):
		return io.NopCloser(br), nil
	case bytes.HasPrefix(head, xzMagic):
		xr, err := xz.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: xz: %v", ErrInvalid, err)
		}
		return io.NopCloser(xr), nil
	case bytes.HasPrefix(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrInvalid, err)
		}
		return zr.IOReadCloser(), nil
	case bytes.HasPrefix(head, bzip2Magic):
		return io.NopCloser(bzip2.NewReader(br)), nil
	case bytes.HasPrefix(head, gzipMagic):
		gr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		return gr, nil
	case bytes.HasPrefix(head, lz4Magic):
		return io.NopCloser(lz4.NewReader(br)), nil
	case compression == "br":
		return io.NopCloser(brotli.NewReader(br)), nil
	}
	return nil, fmt.Errorf("%w: NAR file of unknown compression (narinfo says %q)", ErrInvalid, compression)
}

// compressionOfName returns the compression a NAR file's name suggests.
func compressionOfName(name string) string {
	for ext, c := range map[string]string{".xz": "xz", ".zst": "zstd", ".bz2": "bzip2", ".br": "br", ".lz4": "lz4", ".gz": "gzip"} {
		if strings.HasSuffix(name, ext) {
			return c
		}
	}
	return "none"
}
