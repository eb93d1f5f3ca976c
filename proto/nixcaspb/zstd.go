package nixcaspb

import (
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
)

// Zstd names the gRPC message compressor this package registers (zstd
// at its default level, about zstd -3). Clients compress the SyncService
// calls that carry chunks with it (grpc.UseCompressor(nixcaspb.Zstd)),
// sending chunks coded raw; a server that imports this package reads them
// and answers compressed the same way.
const Zstd = "zstd"

// maxDecodedWindow bounds the memory a decompressor may take for one
// message's window.
const maxDecodedWindow = 128 << 20

func init() { encoding.RegisterCompressor(zstdCompressor{}) }

type zstdCompressor struct{}

var (
	zstdEncoders = sync.Pool{New: func() any {
		// Messages are about a MiB (see SyncService): a larger window
		// would only take memory.
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithWindowSize(2<<20), zstd.WithLowerEncoderMem(true))
		return e
	}}
	zstdDecoders = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxDecodedWindow))
		return d
	}}
)

func (zstdCompressor) Name() string { return Zstd }

func (zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	e := zstdEncoders.Get().(*zstd.Encoder)
	e.Reset(w)
	return &zstdWriter{e}, nil
}

// zstdWriter returns its encoder to the pool when closed.
type zstdWriter struct{ *zstd.Encoder }

func (w *zstdWriter) Close() error {
	if w.Encoder == nil {
		return nil
	}
	err := w.Encoder.Close()
	zstdEncoders.Put(w.Encoder)
	w.Encoder = nil
	return err
}

func (zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	d := zstdDecoders.Get().(*zstd.Decoder)
	if err := d.Reset(r); err != nil {
		zstdDecoders.Put(d)
		return nil, err
	}
	return &zstdReader{d}, nil
}

// zstdReader returns its decoder to the pool at the end of the message.
type zstdReader struct{ d *zstd.Decoder }

func (r *zstdReader) Read(p []byte) (int, error) {
	if r.d == nil {
		return 0, io.EOF
	}
	n, err := r.d.Read(p)
	if err == io.EOF {
		zstdDecoders.Put(r.d)
		r.d = nil
	}
	return n, err
}
