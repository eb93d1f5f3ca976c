package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// PullTarget is one tree of a PullMany: the tree at Root, written to Dst.
type PullTarget struct {
	Root castore.Entry
	Dst  string
}

// treeStreams is how many directory streams PullMany keeps open at once.
const treeStreams = 16

// PullMany writes each target's tree to its Dst as Pull does, fetching
// what they need together: the directories of each tree in a recursive
// stream, treeStreams of them at a time over the one connection, then the
// chunk lists of all their blobs in shared StatBlobs batches and their
// missing chunks in shared ReadChunks batches. Many small trees thus cost
// a few round trips in all rather than several each. Every Dst must not
// exist (nor be given twice); the trees are written in order while the
// chunks arrive, each file once its chunks are cached, and a failure
// leaves the trees written before it in place. The stats are those of the
// whole pull.
func (c *Client) PullMany(ctx context.Context, targets []PullTarget) (PullStats, error) {
	var st PullStats
	seen := make(map[string]bool, len(targets))
	for i := range targets {
		dst := filepath.Clean(targets[i].Dst)
		if seen[dst] {
			return st, fmt.Errorf("%w: client: %s given twice", castore.ErrInvalid, dst)
		}
		seen[dst] = true
		if _, err := os.Lstat(dst); err == nil {
			return st, fmt.Errorf("client: %s already exists", dst)
		} else if !errors.Is(err, os.ErrNotExist) {
			return st, fmt.Errorf("client: %w", err)
		}
	}
	trees := make([]*tree, len(targets))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(treeStreams)
	for i, tg := range targets {
		g.Go(func() error {
			t, err := c.remoteTree(gctx, tg.Root)
			if err != nil {
				return fmt.Errorf("%s: %w", tg.Dst, err)
			}
			trees[i] = t
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return st, err
	}
	// One tree of every distinct blob and directory, for the chunk lists,
	// the chunks and the cache.
	all := &tree{}
	blobAt := map[castore.Digest]int{}
	dirSeen := map[castore.Digest]bool{}
	for _, t := range trees {
		for _, b := range t.blobs {
			if _, ok := blobAt[b.digest]; !ok {
				blobAt[b.digest] = len(all.blobs)
				all.blobs = append(all.blobs, b)
			}
		}
		// Each tree lists children first, so the concatenation does.
		for _, d := range t.dirs {
			if !dirSeen[d.digest] {
				dirSeen[d.digest] = true
				all.dirs = append(all.dirs, d)
			}
		}
	}
	if err := c.chunkLists(ctx, all); err != nil {
		return st, err
	}
	for _, t := range trees {
		for i := range t.blobs {
			t.blobs[i].chunks = all.blobs[blobAt[t.blobs[i].digest]].chunks
		}
	}
	roots := make([]castore.Entry, len(targets))
	for i, tg := range targets {
		roots[i] = tg.Root
	}
	st, err := c.fetchAndWrite(ctx, all, roots, nil, func(ctx context.Context, arr *arrivals) error {
		for i, t := range trees {
			if err := c.materialize(ctx, t, filepath.Clean(targets[i].Dst), arr); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	return st, c.cacheTree(ctx, all)
}
