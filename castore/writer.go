package castore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"
)

// WriterOptions configure a [Writer]. Zero fields take defaults.
type WriterOptions struct {
	Chunker ChunkerOptions
	// Workers is the number of goroutines hashing, compressing and storing
	// chunks, and recording blobs at Flush (default GOMAXPROCS, or more
	// when the store asks for more: see [WriteConcurrency]).
	Workers int
}

// WriteConcurrency is the optional power of a store whose puts mostly wait
// for something other than this machine's cores (a database across a
// network): Writers on it run at least WriteConcurrency puts at once
// unless their options set Workers.
type WriteConcurrency interface {
	WriteConcurrency() int
}

// Writer writes file contents into a store as blobs: the calling goroutine
// reads, hashes and cuts the stream; worker goroutines hash, compress and
// store the chunks. Memory stays bounded: at most a few chunks per worker
// are in flight.
//
// Blobs are recorded (PutBlob) only by Flush, after all their chunks are
// stored, so a blob never becomes visible before its chunks. A Writer is
// not safe for concurrent use; Close it when done.
type Writer struct {
	store   Store
	opts    WriterOptions
	chunker *Chunker
	hasher  interface {
		io.Writer
		Sum([]byte) []byte
		Reset()
	}

	jobs    chan chunkJob
	bufs    *bufferList
	workers sync.WaitGroup
	pending sync.WaitGroup // chunk jobs not yet done

	errOnce sync.Once
	err     error
	cancel  context.CancelFunc
	ctx     context.Context

	blobs  []pendingBlob
	closed bool
}

type chunkJob struct {
	buf  *[]byte
	data []byte
	// dst receives the chunk's digest; known is set when the reader
	// already hashed it (a blob of one chunk is its chunk).
	dst   *ChunkRef
	known bool
}

type pendingBlob struct {
	digest Digest
	size   uint64
	refs   []*ChunkRef // nil for a blob of one chunk
}

// NewWriter returns a Writer storing into s.
func NewWriter(s Store, opts WriterOptions) (*Writer, error) {
	opts.Chunker = opts.Chunker.EnsureDefaults()
	if err := opts.Chunker.Validate(); err != nil {
		return nil, err
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
		if c, ok := As[WriteConcurrency](s); ok {
			opts.Workers = max(opts.Workers, c.WriteConcurrency())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{
		store:   s,
		opts:    opts,
		chunker: NewChunker(opts.Chunker),
		hasher:  NewHasher(),
		jobs:    make(chan chunkJob, 2*opts.Workers),
		ctx:     ctx,
		cancel:  cancel,
	}
	max := opts.Chunker.MaxSize
	w.bufs = newBufferList(cap(w.jobs)+2*opts.Workers+2, max)
	for range opts.Workers {
		w.workers.Add(1)
		go w.work()
	}
	return w, nil
}

func (w *Writer) work() {
	defer w.workers.Done()
	for j := range w.jobs {
		if w.ctx.Err() == nil {
			c := Chunk{digest: j.dst.Digest, data: j.data, ok: true}
			if !j.known {
				c = NewChunk(j.data)
				j.dst.Digest = c.digest
			}
			if _, err := w.store.PutChunk(w.ctx, c); err != nil {
				w.fail(err)
			}
		}
		w.bufs.put(j.buf)
		w.pending.Done()
	}
}

func (w *Writer) fail(err error) {
	w.errOnce.Do(func() {
		w.err = err
		w.cancel()
	})
}

// WriteBlob reads r to its end and writes it as a blob, returning the
// blob's digest and size. Its chunks may still be in flight when it
// returns; Flush waits for them.
func (w *Writer) WriteBlob(ctx context.Context, r io.Reader) (Digest, uint64, error) {
	if w.closed {
		return Digest{}, 0, errors.New("castore: write to closed Writer")
	}
	if w.ctx.Err() != nil {
		return Digest{}, 0, w.err
	}
	w.hasher.Reset()
	w.chunker.Reset(io.TeeReader(r, w.hasher))
	var (
		size  uint64
		refs  []*ChunkRef // slots the workers fill in with chunk digests
		first chunkJob    // held back: if it is the only chunk, it is the blob
	)
	for {
		if err := ctx.Err(); err != nil {
			w.release(first)
			return Digest{}, 0, err
		}
		data, err := w.chunker.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			w.release(first)
			return Digest{}, 0, err
		}
		buf := w.bufs.get()
		j := chunkJob{buf: buf, data: (*buf)[:len(data)], dst: &ChunkRef{Size: uint32(len(data))}}
		copy(j.data, data)
		size += uint64(len(data))
		if first.buf == nil && refs == nil {
			first = j
			continue
		}
		if first.buf != nil {
			refs = append(refs, first.dst)
			w.submit(first)
			first = chunkJob{}
		}
		refs = append(refs, j.dst)
		w.submit(j)
	}
	var d Digest
	w.hasher.Sum(d[:0])
	if refs == nil {
		// One chunk, or none for the empty blob: the chunk is the blob.
		if first.buf == nil {
			first.buf = w.bufs.get()
			first.data = (*first.buf)[:0]
			first.dst = new(ChunkRef)
		}
		first.dst.Digest, first.known = d, true
		w.submit(first)
	}
	w.blobs = append(w.blobs, pendingBlob{digest: d, size: size, refs: refs})
	return d, size, nil
}

// release returns a held-back chunk's buffer to the pool.
func (w *Writer) release(j chunkJob) {
	if j.buf != nil {
		w.bufs.put(j.buf)
	}
}

// Flush waits until every chunk written so far is stored, then records the
// blobs written since the last Flush. It returns the first error any write
// met; after an error the Writer refuses further writes.
func (w *Writer) Flush(ctx context.Context) error {
	w.pending.Wait()
	if w.err != nil {
		return w.err
	}
	// The blobs are independent: up to Workers are recorded at once.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.opts.Workers)
	for _, b := range w.blobs {
		var chunks []ChunkRef
		if len(b.refs) > 1 {
			chunks = make([]ChunkRef, len(b.refs))
			for i, r := range b.refs {
				chunks[i] = *r
			}
		}
		g.Go(func() error {
			if err := w.store.PutBlob(gctx, b.digest, b.size, chunks); err != nil {
				return fmt.Errorf("castore: recording blob %s: %w", b.digest, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		w.fail(err)
		return w.err
	}
	w.blobs = w.blobs[:0]
	return nil
}

// Close stops the workers, discarding blobs not yet flushed (their chunks
// may be stored, unreferenced). It is safe to call twice.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	close(w.jobs)
	w.workers.Wait()
	w.cancel()
	w.blobs = nil
	return nil
}

func (w *Writer) submit(j chunkJob) {
	w.pending.Add(1)
	w.jobs <- j
}
