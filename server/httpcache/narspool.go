package httpcache

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
)

// narSpool holds the NAR of a pull-through fetch as it is decompressed,
// in an unlinked temporary file, for the requests that read it meanwhile
// (see PullThrough.OpenFetching): Nix gives up on a download that sends
// nothing for stalled-download-timeout (300 s), and a large NAR from a
// slow upstream takes longer than that to fetch and ingest whole. The
// spool never fails the fetch: a write to it that fails fails its
// readers only. It gives its disk space back (truncated, written no
// more, opened by no new reader) once a write fails, or once every reader
// that opened it left before the fetch ended: the fetch goes on into the
// store, and later requests wait for it as if there were no spool.
type narSpool struct {
	f *os.File

	mu      sync.Mutex
	n       int64         // bytes written
	werr    error         // the first failed write: readers stop with it
	done    bool          // the fetch ended
	err     error         // why it failed, once done
	more    chan struct{} // closed and replaced at each write and at the end
	refs    int           // the fetch and each reader; the file is closed at 0
	readers int           // readers opened and not closed
	dropped bool          // given up: truncated, written and opened no more
}

// newNARSpool creates a spool in dir (the system's temporary directory
// when empty) for a NAR of size bytes, held by the fetch: room's error
// when room (if not nil) refuses the size.
func newNARSpool(dir string, size uint64, room func(uint64) error) (*narSpool, error) {
	if room != nil {
		if err := room(size); err != nil {
			return nil, err
		}
	}
	f, err := os.CreateTemp(dir, "nixcas-pull-through-*.nar")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return &narSpool{f: f, more: make(chan struct{}), refs: 1}, nil
}

// Write appends p; it always reports success (see narSpool).
func (s *narSpool) Write(p []byte) (int, error) {
	s.mu.Lock()
	off, stopped := s.n, s.werr != nil || s.dropped
	s.mu.Unlock()
	if stopped {
		return len(p), nil
	}
	n, err := s.f.WriteAt(p, off)
	s.mu.Lock()
	s.n += int64(n)
	switch {
	case s.dropped:
		// Given up while p was written: p goes too.
		s.f.Truncate(0)
	case err != nil:
		s.werr = fmt.Errorf("spooling the NAR: %w", err)
		s.dropLocked()
	}
	s.wake()
	s.mu.Unlock()
	return len(p), nil
}

// dropLocked gives the spool up: its file is emptied (the fetch may go
// on for long), and it is neither written nor opened again. Called
// holding mu.
func (s *narSpool) dropLocked() {
	s.dropped = true
	s.f.Truncate(0)
}

// finish records that the fetch ended with err and releases its hold.
func (s *narSpool) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.wake()
	s.mu.Unlock()
	s.release(false)
}

// wake tells the readers waiting that something changed; called holding
// mu.
func (s *narSpool) wake() {
	close(s.more)
	s.more = make(chan struct{})
}

// open returns a reader of the spool from its start, or false when the
// spool is closed or given up.
func (s *narSpool) open(ctx context.Context) (io.ReadCloser, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 || s.dropped {
		return nil, false
	}
	s.refs++
	s.readers++
	return &spoolReader{s: s, ctx: ctx}, true
}

// release drops the fetch's hold (finish) or a reader's (reader set).
// The last reader to leave a fetch still going gives the spool up.
func (s *narSpool) release(reader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reader {
		if s.readers--; s.readers == 0 && !s.done && !s.dropped {
			s.dropLocked()
		}
	}
	if s.refs--; s.refs == 0 {
		s.f.Close()
	}
}

// fetchFailed is how a spoolReader ends when the fetch it follows failed.
type fetchFailed struct{ err error }

func (e fetchFailed) Error() string { return e.err.Error() }
func (e fetchFailed) Unwrap() error { return e.err }

// spoolReader reads a narSpool as it grows: it waits for more until the
// fetch ends, then ends with the fetch's error, if any (fetchFailed).
type spoolReader struct {
	s      *narSpool
	ctx    context.Context
	off    int64
	closed sync.Once
}

func (r *spoolReader) Read(p []byte) (int, error) {
	for {
		r.s.mu.Lock()
		n, werr, done, err, more := r.s.n, r.s.werr, r.s.done, r.s.err, r.s.more
		r.s.mu.Unlock()
		switch {
		case werr != nil:
			// The file was emptied (dropLocked): what was written is
			// gone too.
			return 0, werr
		case r.off < n:
			k, rerr := r.s.f.ReadAt(p[:min(int64(len(p)), n-r.off)], r.off)
			r.off += int64(k)
			if rerr == io.EOF {
				rerr = nil
			}
			return k, rerr
		case done && err != nil:
			return 0, fetchFailed{err}
		case done:
			return 0, io.EOF
		}
		select {
		case <-more:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// Close releases the reader's hold on the spool. Safe twice.
func (r *spoolReader) Close() error {
	r.closed.Do(func() { r.s.release(true) })
	return nil
}
