package store

import (
	"context"
	"sync/atomic"
)

// pathCount is the number of PathInfos in an Index, once counted.
type pathCount struct {
	counted atomic.Bool
	n       atomic.Uint64
}

// add counts a new path; before the first count, the scan will see it.
func (c *pathCount) add() {
	if c.counted.Load() {
		c.n.Add(1)
	}
}

// remove uncounts a deleted path.
func (c *pathCount) remove() {
	if c.counted.Load() {
		c.n.Add(^uint64(0))
	}
}

// CountPaths returns the number of store paths recorded. The first call
// scans the index keys once; after that, Put keeps the count and a call
// costs nothing, so it suits a metrics gauge. Safe for concurrent use.
func (x *Index) CountPaths(ctx context.Context) (uint64, error) {
	if x.paths.counted.Load() {
		return x.paths.n.Load(), nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.paths.counted.Load() {
		return x.paths.n.Load(), nil
	}
	var n uint64
	err := x.meta.ScanMeta(ctx, KindPathInfo, nil, func(_, _ []byte) error {
		n++
		return nil
	})
	if err != nil {
		return 0, err
	}
	x.paths.n.Store(n)
	x.paths.counted.Store(true)
	return n, nil
}
