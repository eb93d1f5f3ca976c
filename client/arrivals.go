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
//
// The fetch also says in what order the chunks will come (planned): the
// writers write the files in that order rather than the tree's, so that
// a frame received whole leaves memory soon after it came. The frames of
// a store are in the order its chunks were stored, which a push of
// several streams interleaves: in a 200 MiB tree pushed so, the chunks of
// one frame spanned a third of the tree on average, and the frames held
// for writers going in tree order grew to 149 MiB.
type arrivals struct {
	Progress
	chunks  map[castore.Digest]*arrival // fixed once made
	held    *heldFrames                 // set before the fetch and the writers start
	planned chan struct{}               // closed once each arrival's rank is set (planDone)
	plan    sync.Once
}

type arrival struct {
	once sync.Once
	ch   chan struct{}
	// rank orders the chunk's coming among the others: the fetch's calls
	// and frames are numbered in the order they are made. Set before
	// planned is closed, not changed after.
	rank int
}

// newArrivals returns the signals of the chunks refs, none raised.
func newArrivals(refs []castore.ChunkRef) *arrivals {
	a := &arrivals{Progress: noProgress{}, chunks: make(map[castore.Digest]*arrival, len(refs)), planned: make(chan struct{})}
	for _, r := range refs {
		a.chunks[r.Digest] = &arrival{ch: make(chan struct{})}
	}
	return a
}

// setRank sets the rank of chunk d, if it is being fetched; only before
// planDone. A nil *arrivals ranks nothing.
func (a *arrivals) setRank(d castore.Digest, rank int) {
	if a == nil {
		return
	}
	if x, ok := a.chunks[d]; ok {
		x.rank = rank
	}
}

// planDone says that the ranks are set, or will not be (a failed fetch):
// they are 0 then, and the files go in the tree's order, those the cache
// has first. A nil *arrivals has no plan.
func (a *arrivals) planDone() {
	if a != nil {
		a.plan.Do(func() { close(a.planned) })
	}
}

// rankOf returns the latest rank of the chunks refs being fetched, or -1
// when none is (the cache has them all); call it once the plan is known
// (waitPlan). Files go by the rank of their last chunk: a writer that took
// a file by its first chunk waited for the rest, spread over later frames
// by the push's interleaving, while every writer did so and the frames
// received meanwhile piled up (149 MiB held, in the tree above). A nil
// *arrivals ranks every file -1.
func (a *arrivals) rankOf(refs []castore.ChunkRef) int {
	if a == nil {
		return -1
	}
	best := -1
	for _, r := range refs {
		if x, ok := a.chunks[r.Digest]; ok && x.rank > best {
			best = x.rank
		}
	}
	return best
}

// waitPlan returns once the fetch's plan is known, or ctx is done.
func (a *arrivals) waitPlan(ctx context.Context) error {
	if a == nil {
		return nil
	}
	select {
	case <-a.planned:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
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
