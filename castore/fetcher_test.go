package castore_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// gatedChunks answers GetChunk for any digest with one byte, after gate
// is closed, except for the digest opener, whose read closes gate. It
// counts the reads running at once.
type gatedChunks struct {
	gate    chan struct{}
	opener  castore.Digest
	once    sync.Once
	running atomic.Int32
	peak    atomic.Int32
}

func (s *gatedChunks) HasChunk(context.Context, castore.Digest) (bool, error) { return true, nil }

func (s *gatedChunks) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	n := s.running.Add(1)
	defer s.running.Add(-1)
	for {
		p := s.peak.Load()
		if n <= p || s.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if d == s.opener {
		s.once.Do(func() { close(s.gate) })
	} else {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
	return append(dst, 1), nil
}

// settledReads waits up to 10 s for want reads to be held at the gate,
// then 50 ms for any beyond them to start, and returns how many are.
func (s *gatedChunks) settledReads(want int32) int32 {
	for deadline := time.Now().Add(10 * time.Second); s.running.Load() < want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	return s.running.Load()
}

// openGate lets every read through and waits for the chunks pending.
func (s *gatedChunks) openGate(t *testing.T, pending []*castore.PendingChunk) {
	t.Helper()
	close(s.gate)
	for i, p := range pending {
		if _, err := p.Wait(); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		p.Release()
	}
}

func oneByteRef(i int) castore.ChunkRef {
	return castore.ChunkRef{Digest: castore.Hash([]byte{byte(i), byte(i >> 8)}), Size: 1}
}

// TestFetcherNoChunkHoldsUpLaterOnes: 600 fetches wait for the read of the
// one queued after them (as the chunks of a frame being decoded wait for
// it while the next frame's chunk should start decoding). A Fetcher that
// may run a worker for each does not wait on itself (the last read, last
// in the queue, comes only once a worker runs for each of the 600); one
// with fewer workers, or one that lets a job wait for a busy worker while
// it may start another, never reaches the last read.
func TestFetcherNoChunkHoldsUpLaterOnes(t *testing.T) {
	const waiting = 600
	s := &gatedChunks{gate: make(chan struct{}), opener: oneByteRef(waiting).Digest}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := castore.NewFetcher(ctx, s, 1024)
	defer f.Close()
	var pending []*castore.PendingChunk
	for i := range waiting + 1 {
		pending = append(pending, f.Fetch(oneByteRef(i)))
	}
	for i, p := range pending {
		if _, err := p.Wait(); err != nil {
			t.Fatalf("chunk %d: %v (the read that would let it go was never started)", i, err)
		}
		p.Release()
	}
}

// TestFetcherWorkerBound: a Fetcher runs no more reads at once than its
// workers, however many chunks are queued.
func TestFetcherWorkerBound(t *testing.T) {
	s := &gatedChunks{gate: make(chan struct{}), opener: oneByteRef(-1).Digest}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := castore.NewFetcher(ctx, s, 4)
	defer f.Close()
	var pending []*castore.PendingChunk
	for i := range 40 {
		pending = append(pending, f.Fetch(oneByteRef(i)))
	}
	// The four workers are now held at the gate; give others, were there
	// any, the time to start.
	if got := s.settledReads(4); got != 4 {
		t.Errorf("%d reads at once with 4 workers, want 4", got)
	}
	s.openGate(t, pending)
	if got := s.peak.Load(); got > 4 {
		t.Errorf("%d reads at once at the peak with 4 workers", got)
	}
}

// TestFetcherSharedLimit: two Fetchers of up to 100 workers each share a
// limit of 4: no more than the limit plus the first worker of each read at
// once, a Fetcher that finds no slot goes on with the workers it has, and
// Close gives the slots back for the next Fetcher.
func TestFetcherSharedLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limit := castore.NewWorkerLimit(4)
	s := &gatedChunks{gate: make(chan struct{}), opener: oneByteRef(-1).Digest}
	a := castore.NewLimitedFetcher(ctx, s, 100, limit)
	b := castore.NewLimitedFetcher(ctx, s, 100, limit)
	var pending []*castore.PendingChunk
	for i := range 50 {
		pending = append(pending, a.Fetch(oneByteRef(i)), b.Fetch(oneByteRef(1000+i)))
	}
	if got := s.settledReads(6); got != 6 {
		t.Errorf("%d reads at once for two Fetchers sharing a limit of 4, want 6 (4 and the first of each)", got)
	}
	s.openGate(t, pending)
	a.Close()
	b.Close()

	// The slots are back: a new Fetcher starts 4 workers past its first.
	s2 := &gatedChunks{gate: make(chan struct{}), opener: oneByteRef(-1).Digest}
	c := castore.NewLimitedFetcher(ctx, s2, 100, limit)
	defer c.Close()
	pending = pending[:0]
	for i := range 20 {
		pending = append(pending, c.Fetch(oneByteRef(i)))
	}
	if got := s2.settledReads(5); got != 5 {
		t.Errorf("%d reads at once after the other Fetchers closed, want 5 (the limit's 4 given back, and its first)", got)
	}
	s2.openGate(t, pending)
}
