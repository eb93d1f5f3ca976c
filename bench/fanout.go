package bench

import (
	"context"
	"io"
	"sync"
	"time"
)

// fanout copies one stream to several readers. A producer goroutine reads
// the source in blocks and hands every block to each reader's queue; the
// blocks are shared, never copied. Each queue holds up to depth blocks, so
// a reader that falls behind stalls the others only once its queue is
// full, and memory stays bounded by about (depth+2) blocks whatever the
// stream's length.
type fanout struct {
	readers []*fanoutReader
}

// fanoutReader is one reader of a fanout. It is not safe for concurrent
// use; Close it when done, also before the end of the stream, so that the
// producer stops waiting for it.
type fanoutReader struct {
	ch     chan []byte
	done   chan struct{}
	once   sync.Once
	err    error // the source's error, set before ch is closed
	cur    []byte
	waited time.Duration // time spent waiting for blocks
}

// newFanout starts copying src to n readers in blocks of blockSize bytes.
// The producer stops at the end of src, on a read error (which every reader
// then returns in place of io.EOF), or when ctx is done (its error likewise).
func newFanout(ctx context.Context, src io.Reader, n, blockSize, depth int) *fanout {
	f := &fanout{readers: make([]*fanoutReader, n)}
	for i := range f.readers {
		f.readers[i] = &fanoutReader{ch: make(chan []byte, depth), done: make(chan struct{})}
	}
	go f.produce(ctx, src, blockSize)
	return f
}

func (f *fanout) produce(ctx context.Context, src io.Reader, blockSize int) {
	var err error
	for err == nil {
		b := make([]byte, blockSize)
		var n int
		n, err = io.ReadFull(src, b)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if n == 0 {
			continue
		}
		for _, r := range f.readers {
			select {
			case r.ch <- b[:n]:
			case <-r.done:
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err != nil && err != io.EOF {
				break
			}
		}
	}
	for _, r := range f.readers {
		r.err = err
		close(r.ch)
	}
}

// Read implements io.Reader.
func (r *fanoutReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		start := time.Now()
		b, ok := <-r.ch
		r.waited += time.Since(start)
		if !ok {
			return 0, r.err
		}
		r.cur = b
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// WriteTo implements io.WriterTo, handing whole blocks to w.
func (r *fanoutReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.cur) == 0 {
			start := time.Now()
			b, ok := <-r.ch
			r.waited += time.Since(start)
			if !ok {
				if r.err == io.EOF {
					return total, nil
				}
				return total, r.err
			}
			r.cur = b
		}
		n, err := w.Write(r.cur)
		total += int64(n)
		r.cur = r.cur[n:]
		if err != nil {
			return total, err
		}
	}
}

// Close tells the producer to skip this reader from now on. It is safe to
// call twice.
func (r *fanoutReader) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}
