package client

import (
	"context"
	"sync"

	"github.com/nixcas/nixcas/castore"
)

// arrivals lets a pull write files while their chunks are still being
// fetched: each chunk the pull fetches has a signal, raised once the
// chunk is cached, which a writer of a file holding it waits for. It is
// the Progress of the fetch (the chunk paths tell it of each chunk cached
// through chunkCached), passing the bytes on to the fetch's own Progress.
//
// held, when not nil, holds the frames received whole: a chunk that
// arrived is then either there or in the cache.
type arrivals struct {
	Progress
	chunks map[castore.Digest]*arrival // fixed once made
	held   *heldFrames                 // set before the fetch and the writers start
}

type arrival struct {
	once sync.Once
	ch   chan struct{}
}

// newArrivals returns the signals of the chunks refs, none raised.
func newArrivals(refs []castore.ChunkRef) *arrivals {
	a := &arrivals{Progress: noProgress{}, chunks: make(map[castore.Digest]*arrival, len(refs))}
	for _, r := range refs {
		a.chunks[r.Digest] = &arrival{ch: make(chan struct{})}
	}
	return a
}

// arrived raises the signal of chunk d, if it has one.
func (a *arrivals) arrived(d castore.Digest) {
	if x, ok := a.chunks[d]; ok {
		x.once.Do(func() { close(x.ch) })
	}
}

// wait returns once chunk d is cached (at once for a chunk not being
// fetched), or ctx is done. A nil *arrivals waits for nothing.
func (a *arrivals) wait(ctx context.Context, d castore.Digest) error {
	if a == nil {
		return nil
	}
	x, ok := a.chunks[d]
	if !ok {
		return nil
	}
	select {
	case <-x.ch:
		return nil
	default:
	}
	a.held.waitingFor(d, 1)
	defer a.held.waitingFor(d, -1)
	select {
	case <-x.ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// chunkCached tells bar that chunk r was fetched and cached: its bytes,
// and, when bar is the arrivals of a pull, its signal.
func chunkCached(bar Progress, r castore.ChunkRef) {
	bar.Add(int64(r.Size))
	if a, ok := bar.(*arrivals); ok {
		a.arrived(r.Digest)
	}
}

// heldChunk appends the bytes of chunk d to dst when a frame held for
// the pull has them (see heldFrames.copyChunk). A nil *arrivals holds
// nothing, nor does a frame hold a chunk the pull does not fetch (the
// cache had it).
func (a *arrivals) heldChunk(d castore.Digest, dst []byte) ([]byte, bool) {
	if a == nil {
		return dst, false
	}
	if _, fetched := a.chunks[d]; !fetched {
		return dst, false
	}
	return a.held.copyChunk(d, dst)
}
