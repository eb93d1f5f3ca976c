package castore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// BlobChunks returns the chunks of the blob d of size bytes, in order: its
// index, or the blob itself as its only chunk when it has no index. It does
// not check that the chunks are stored.
func BlobChunks(ctx context.Context, s BlobIndexReader, d Digest, size uint64) ([]ChunkRef, error) {
	idx, err := s.GetBlobIndex(ctx, d)
	if errors.Is(err, ErrNotFound) {
		if size > MaxChunkSize {
			return nil, fmt.Errorf("%w: blob %s of %d bytes has no index", ErrNotFound, d, size)
		}
		return []ChunkRef{{Digest: d, Size: uint32(size)}}, nil
	}
	if err != nil {
		return nil, err
	}
	var sum uint64
	for _, c := range idx {
		sum += uint64(c.Size)
	}
	if sum != size {
		return nil, fmt.Errorf("%w: blob %s: index covers %d bytes, want %d", ErrCorrupt, d, sum, size)
	}
	return idx, nil
}

// fetchBuffers are shared by all Fetchers, so that a render does not start
// by allocating its buffers anew, in five sizes, so that a small chunk
// (most files are small) does not pin a buffer made for the largest, nor a
// chunk of the average size (64 KiB) one of four times its size: 1024 of
// 4 KiB, 256 of 16 KiB and of 64 KiB, 128 of 128 KiB and 64 of the largest
// chunk, 56 MiB at most. A render reads ahead by the bytes of these
// buffers (narrender), so the finer sizes let it look further ahead for the
// same memory: with 16, 64 and 256 KiB alone a first render of go1.22.0
// (BenchmarkRenderDecoding, three runs each way) ran at 858 to 888 MB/s,
// with these 924 to 1039.
var fetchBuffers = []*bufferList{
	newBufferList(1024, 4<<10),
	newBufferList(256, 16<<10),
	newBufferList(256, 64<<10),
	newBufferList(128, 128<<10),
	newBufferList(64, DefaultChunkerOptions.MaxSize),
}

// fetchBufferList returns the list of the smallest buffers that hold size
// bytes (the largest when none does).
func fetchBufferList(size int) *bufferList {
	for _, l := range fetchBuffers[:len(fetchBuffers)-1] {
		if size <= l.size {
			return l
		}
	}
	return fetchBuffers[len(fetchBuffers)-1]
}

// FetchBufferSize returns the bytes of buffer a Fetcher holds for a chunk
// of size bytes, fetched and not yet released: what a reader that bounds
// its read-ahead in memory counts.
func FetchBufferSize(size uint32) int64 {
	return int64(max(fetchBufferList(int(size)).size, int(size)))
}

// putFetchBuffer keeps b in the list of its size, or drops it.
func putFetchBuffer(b *[]byte) {
	for _, l := range fetchBuffers {
		if cap(*b) == l.size || l == fetchBuffers[len(fetchBuffers)-1] && cap(*b) > l.size {
			l.put(b)
			return
		}
	}
}

// fetchedBytes counts the chunk buffers all Fetchers hold (see
// FetchedBytes).
var fetchedBytes atomic.Int64

// FetchedBytes returns the bytes of the chunk buffers all Fetchers of the
// process hold: chunks fetched ahead of their use or in use, not yet
// released nor given back by a stall. It is the memory renders and blob
// readers pin beyond their fixed buffers; a stalled render holds at most
// the chunk it is writing.
func FetchedBytes() int64 { return fetchedBytes.Load() }

// Fetcher reads chunks on several goroutines ahead of their use, checking
// each one's size before handing it out (re-hashing is the store's
// business: see Verifying). Callers bound how
// many chunks they keep pending; each pending chunk holds up to one chunk of
// memory until released.
//
// When the consumer stalls (see Blocked), the Fetcher stops reading ahead
// and gives back the buffers of the chunks it fetched but nobody waits for
// yet; Wait reads such a chunk again. A stalled consumer then pins only
// the chunks it holds.
type Fetcher struct {
	store   ChunkReader
	ctx     context.Context
	jobs    chan *PendingChunk
	workers sync.WaitGroup
	once    sync.Once
	// Workers start as fetches find none idle to take them, up to
	// maxWorkers (see queueJob).
	workMu     sync.Mutex
	maxWorkers int
	limit      *WorkerLimit // nil: none beyond maxWorkers
	running    int          // workers started
	limited    int          // of them, those that took a slot of limit
	idle       int          // workers waiting for a job
	queued     int          // jobs sent or being sent, not yet taken

	mu      sync.Mutex
	seq     uint64                     // counts Blocked calls and their ends
	resume  chan struct{}              // non-nil while stalled; closed at the end
	fetched map[*PendingChunk]struct{} // fetched, not yet waited for
}

// PendingChunk is a chunk being fetched.
type PendingChunk struct {
	ref  ChunkRef
	done chan struct{}
	buf  *[]byte
	data []byte
	err  error
	f    *Fetcher
	shed bool  // fetched, then its buffer given back during a stall (f.mu)
	held int64 // cap of buf, counted in fetchedBytes
}

// NewFetcher returns a Fetcher reading from s until ctx ends or Close is
// called, on at most workers goroutines at once (GOMAXPROCS when <= 0),
// each started when a fetch finds no worker idle.
func NewFetcher(ctx context.Context, s ChunkReader, workers int) *Fetcher {
	return NewLimitedFetcher(ctx, s, workers, nil)
}

// NewLimitedFetcher is NewFetcher whose workers past its first also take
// a slot of limit, shared with other Fetchers, while they run (none when
// limit is nil), until Close gives them back. A Fetcher that finds no
// slot free goes on with the workers it has.
func NewLimitedFetcher(ctx context.Context, s ChunkReader, workers int, limit *WorkerLimit) *Fetcher {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &Fetcher{store: s, ctx: ctx, jobs: make(chan *PendingChunk, 64), fetched: map[*PendingChunk]struct{}{},
		maxWorkers: workers, limit: limit}
}

// WorkerLimit bounds the workers of the Fetchers that share it, past the
// first worker of each (which each has, to make progress).
type WorkerLimit struct {
	slots chan struct{}
}

// NewWorkerLimit returns a limit of n workers.
func NewWorkerLimit(n int) *WorkerLimit {
	return &WorkerLimit{slots: make(chan struct{}, n)}
}

// take takes a slot if one is free.
func (l *WorkerLimit) take() bool {
	if l == nil {
		return true
	}
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// give gives n slots back.
func (l *WorkerLimit) give(n int) {
	if l == nil {
		return
	}
	for range n {
		<-l.slots
	}
}

func (f *Fetcher) work() {
	defer f.workers.Done()
	for {
		f.workMu.Lock()
		f.idle++
		f.workMu.Unlock()
		p, ok := <-f.jobs
		f.workMu.Lock()
		f.idle--
		if ok {
			f.queued--
		}
		f.workMu.Unlock()
		if !ok {
			return
		}
		f.waitStall()
		p.fetch()
		f.keep(p)
		close(p.done)
	}
}

// queueJob counts a job about to be sent, starting a worker for it unless
// more workers wait than jobs are queued ahead of it (each waiting worker
// takes one) or f has as many as it may (its maximum, or no slot of its
// limit free). A job never waits for a busy worker while f may start
// another.
func (f *Fetcher) queueJob() {
	f.workMu.Lock()
	defer f.workMu.Unlock()
	if f.idle <= f.queued && f.running < f.maxWorkers {
		start := f.running == 0
		if !start && f.limit.take() {
			start = true
			f.limited++
		}
		if start {
			f.running++
			f.workers.Add(1)
			go f.work()
		}
	}
	f.queued++
}

// waitStall waits while f is stalled (or until its context ends).
func (f *Fetcher) waitStall() {
	f.mu.Lock()
	resume := f.resume
	f.mu.Unlock()
	if resume != nil {
		select {
		case <-resume:
		case <-f.ctx.Done():
		}
	}
}

// keep records p as fetched, or gives its buffer back at once when f
// stalled meanwhile.
func (f *Fetcher) keep(p *PendingChunk) {
	if p.buf == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resume != nil {
		p.shedLocked()
		return
	}
	f.fetched[p] = struct{}{}
}

// shedLocked gives p's buffer back; Wait will fetch it again. f.mu is held.
func (p *PendingChunk) shedLocked() {
	p.putBuf()
	p.shed = true
}

// putBuf gives p's buffer back to fetchBuffers.
func (p *PendingChunk) putBuf() {
	fetchedBytes.Add(-p.held)
	putFetchBuffer(p.buf)
	p.buf, p.data, p.held = nil, nil, 0
}

// Blocked tells f that its consumer starts waiting on something else,
// such as a write to a slow client. When the wait lasts longer than after,
// f stalls: its workers stop reading ahead and the chunks fetched but not
// yet waited for give their buffers back (Wait reads them again). Call
// the returned function when the wait ends; it resumes the workers.
func (f *Fetcher) Blocked(after time.Duration) (end func()) {
	f.mu.Lock()
	f.seq++
	seq := f.seq
	f.mu.Unlock()
	t := time.AfterFunc(after, func() { f.stall(seq) })
	return func() {
		t.Stop()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.seq++ // a stall(seq) still to come does nothing
		if f.resume != nil {
			close(f.resume)
			f.resume = nil
		}
	}
}

// stall stalls f unless the wait seq has ended.
func (f *Fetcher) stall(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seq != seq || f.resume != nil {
		return
	}
	f.resume = make(chan struct{})
	for p := range f.fetched {
		p.shedLocked()
	}
	clear(f.fetched)
}

func (p *PendingChunk) fetch() {
	p.data, p.err = nil, nil
	if err := p.f.ctx.Err(); err != nil {
		p.err = err
		return
	}
	p.buf = fetchBufferList(int(p.ref.Size)).get()
	data, err := p.f.store.GetChunk(p.f.ctx, p.ref.Digest, (*p.buf)[:0])
	*p.buf = data[:0] // keep a grown buffer for the next use
	p.held = int64(cap(*p.buf))
	fetchedBytes.Add(p.held)
	switch {
	case err != nil:
		p.err = err
	case len(data) != int(p.ref.Size):
		p.err = fmt.Errorf("%w: chunk %s has %d bytes, want %d", ErrCorrupt, p.ref.Digest, len(data), p.ref.Size)
	default:
		p.data = data
	}
}

// Fetch queues ref for reading. It may block while the workers are busy.
func (f *Fetcher) Fetch(ref ChunkRef) *PendingChunk {
	p := &PendingChunk{ref: ref, done: make(chan struct{}), f: f}
	f.queueJob()
	f.jobs <- p
	return p
}

// Wait returns the chunk's bytes, valid until Release. A chunk whose
// buffer was given back during a stall is read again, on the caller's
// goroutine.
func (p *PendingChunk) Wait() ([]byte, error) {
	<-p.done
	p.f.mu.Lock()
	delete(p.f.fetched, p)
	shed := p.shed
	p.shed = false
	p.f.mu.Unlock()
	if shed {
		p.fetch()
	}
	if p.err != nil {
		return nil, p.err
	}
	return p.data, nil
}

// Release waits for the fetch to end and gives its buffer back.
func (p *PendingChunk) Release() {
	<-p.done
	p.f.mu.Lock()
	delete(p.f.fetched, p)
	p.shed = false
	p.f.mu.Unlock()
	if p.buf != nil {
		p.putBuf()
	}
}

// Close stops the workers once queued fetches are done. Safe to call twice;
// no Fetch may follow.
func (f *Fetcher) Close() {
	f.once.Do(func() {
		close(f.jobs)
		f.workers.Wait()
		f.limit.give(f.limited)
	})
}

// readAhead is how many chunks a blob reader keeps in flight.
const readAhead = 8

// BlobReader reads one blob, fetching chunks ahead, and checks the whole
// blob's digest at its end.
type BlobReader struct {
	digest  Digest
	chunks  []ChunkRef
	next    int // next chunk to queue
	queue   []*PendingChunk
	cur     []byte
	hasher  interface{ Sum([]byte) []byte }
	write   func([]byte)
	fetcher *Fetcher
	ownF    bool
	err     error
}

// OpenBlob opens the blob d of size bytes for reading. The reader checks
// the blob's digest (a mismatch is an ErrCorrupt error from the last Read);
// wrap s with Verifying to check every chunk as it arrives. Close it when
// done.
func OpenBlob(ctx context.Context, s BlobSource, d Digest, size uint64) (*BlobReader, error) {
	chunks, err := BlobChunks(ctx, s, d, size)
	if err != nil {
		return nil, err
	}
	r := &BlobReader{digest: d, chunks: chunks, fetcher: NewFetcher(ctx, s, 0), ownF: true}
	if _, ok := s.(verifying); !ok || len(chunks) > 1 {
		h := NewHasher()
		r.hasher = h
		r.write = func(b []byte) { h.Write(b) }
	}
	return r, nil
}

// Read implements io.Reader.
func (r *BlobReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.advance()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// advance releases the current chunk and makes the next one current, or
// sets r.err (io.EOF at the end).
func (r *BlobReader) advance() {
	if len(r.queue) > 0 && r.cur != nil {
		r.queue[0].Release()
		r.queue = r.queue[1:]
	}
	r.cur = nil
	for len(r.queue) < readAhead && r.next < len(r.chunks) {
		r.queue = append(r.queue, r.fetcher.Fetch(r.chunks[r.next]))
		r.next++
	}
	if len(r.queue) == 0 {
		r.err = io.EOF
		if r.hasher != nil {
			var got Digest
			r.hasher.Sum(got[:0])
			if got != r.digest {
				r.err = fmt.Errorf("%w: blob %s: chunks hash to %s", ErrCorrupt, r.digest, got)
			}
		}
		return
	}
	data, err := r.queue[0].Wait()
	if err != nil {
		r.err = err
		return
	}
	if r.write != nil {
		r.write(data)
	}
	r.cur = data[:len(data):len(data)]
	if len(data) == 0 {
		// An empty chunk (the empty blob): nothing to hand out.
		r.queue[0].Release()
		r.queue = r.queue[1:]
	}
}

// Close releases pending chunks and stops the reader's workers. Safe to
// call twice.
func (r *BlobReader) Close() error {
	for _, p := range r.queue {
		p.Release()
	}
	r.queue = nil
	if r.ownF {
		r.fetcher.Close()
	}
	if r.err == nil {
		r.err = errors.New("castore: read from closed BlobReader")
	}
	return nil
}
