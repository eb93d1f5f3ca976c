package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// Retention says which store paths Expire deletes. A path is "accessed"
// when it is uploaded (Put) or read (RecordAccess: a narinfo, a NAR or a
// gRPC PathInfo served); pinned paths are never deleted.
type Retention struct {
	// MaxAge deletes the paths not accessed for longer than this; 0 sets
	// no age limit.
	MaxAge time.Duration
	// MaxSize deletes the least recently accessed paths until the NAR
	// sizes of those left add up to at most MaxSize bytes; 0 sets no size
	// limit. The sum of NAR sizes is what the paths are to Nix: it is
	// known exactly without a garbage collection, and it shrinks by
	// exactly what a delete removes, where the bytes stored (deduplicated,
	// compressed, shared between paths) drop only after a garbage
	// collection, by an amount no one path determines. Stored bytes are
	// usually far below the sum, so MaxSize bounds the store from above.
	MaxSize uint64
	// Now is the time ages count from; nil takes the index's clock.
	Now func() time.Time
	// DryRun reports what would be deleted and changes nothing (not even
	// the access times of paths seen for the first time).
	DryRun bool
}

// Validate refuses a negative age.
func (r Retention) Validate() error {
	if r.MaxAge < 0 {
		return fmt.Errorf("%w: retention: negative maximum age %v", ErrInvalid, r.MaxAge)
	}
	return nil
}

// Reasons a path is expired.
const (
	ExpiredAge  = "age"
	ExpiredSize = "size"
)

// ExpiredPath is a path Expire deleted (or would delete, in a dry run).
type ExpiredPath struct {
	Path       string    `json:"path"`
	NARSize    uint64    `json:"narSize"`
	LastAccess time.Time `json:"lastAccess"`
	// Reason is ExpiredAge or ExpiredSize.
	Reason string `json:"reason"`
}

// ExpireResult is what Expire did.
type ExpireResult struct {
	// Deleted are the paths deleted, oldest access first within each
	// reason, age before size.
	Deleted []ExpiredPath `json:"deleted"`
	// DeletedNARBytes is the sum of their NAR sizes.
	DeletedNARBytes uint64 `json:"deletedNarBytes"`
	// Paths and NARBytes count the paths left and their NAR sizes.
	Paths    int    `json:"paths"`
	NARBytes uint64 `json:"narBytes"`
	// Pinned counts the pinned paths left (among Paths).
	Pinned int `json:"pinned"`
	// FirstSeen counts the paths that had no access time (stored before
	// access times were kept): they were recorded as accessed now.
	FirstSeen int `json:"firstSeen"`
	// Skipped counts the paths chosen to delete that were accessed or
	// pinned meanwhile, and so kept.
	Skipped int `json:"skipped"`
	// Fits says whether NARBytes is within MaxSize (always with no
	// MaxSize); it is false only when pinned paths alone exceed it.
	Fits   bool `json:"fits"`
	DryRun bool `json:"dryRun"`
}

// retained is what Expire knows of one path.
type retained struct {
	d      PathDigest
	path   string
	size   uint64
	last   uint32 // minutes
	pinned bool
	gone   bool
}

// Expire deletes the store paths r says have expired: first those not
// accessed within r.MaxAge, then, while the NAR sizes of the paths left
// exceed r.MaxSize, the least recently accessed (ties by store path
// digest); pinned paths never. A path without an access time counts as
// accessed now, and is recorded so (it ages from its first Expire on, so
// a store that kept no access times does not lose everything at once). A
// path accessed or pinned between the scan and its delete is kept. It
// holds a few dozen bytes per path in memory. Deletes make data
// unreferenced; a garbage collection frees it.
func (x *Index) Expire(ctx context.Context, r Retention) (ExpireResult, error) {
	res := ExpireResult{DryRun: r.DryRun}
	if err := r.Validate(); err != nil {
		return res, err
	}
	now := x.clock()
	if r.Now != nil {
		now = r.Now()
	}
	nowMin := accessMinutes(now)
	if !r.DryRun {
		if err := x.FlushAccess(ctx); err != nil {
			return res, err
		}
	}
	access := map[PathDigest]uint32{}
	if err := x.meta.ScanMeta(ctx, metaKindAccess, nil, func(k, v []byte) error {
		var d PathDigest
		if len(k) != len(d) {
			return fmt.Errorf("%w: access record key of %d bytes", castore.ErrCorrupt, len(k))
		}
		m, err := decodeAccess(k, v)
		copy(d[:], k)
		access[d] = m
		return err
	}); err != nil {
		return res, fmt.Errorf("store: reading access times: %w", err)
	}
	x.access.mu.Lock()
	for d, m := range x.access.pending { // a dry run's reads not flushed
		access[d] = max(access[d], m)
	}
	x.access.mu.Unlock()
	pins := map[PathDigest]bool{}
	if err := x.meta.ScanMeta(ctx, metaKindPin, nil, func(k, _ []byte) error {
		var d PathDigest
		copy(d[:], k)
		pins[d] = true
		return nil
	}); err != nil {
		return res, fmt.Errorf("store: reading pins: %w", err)
	}
	var paths []retained
	var firstSeen []PathDigest
	err := x.List(ctx, func(p *PathInfo) error {
		e := retained{d: p.Digest(), path: p.Path, size: p.NARSize, pinned: pins[p.Digest()]}
		m, ok := access[e.d]
		if !ok {
			m = nowMin
			firstSeen = append(firstSeen, e.d)
		}
		e.last = m
		delete(access, e.d)
		paths = append(paths, e)
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("store: listing paths: %w", err)
	}
	res.FirstSeen = len(firstSeen)
	if !r.DryRun {
		if err := x.recordFirstSeen(ctx, firstSeen, nowMin, access); err != nil {
			return res, err
		}
	}

	expire := func(e *retained, reason string) error {
		if !r.DryRun {
			ok, err := x.deleteIfUnused(ctx, e.d, e.last)
			if err != nil {
				return fmt.Errorf("store: expiring %s: %w", e.path, err)
			}
			if !ok {
				res.Skipped++
				e.pinned = true // kept: never a candidate again this run
				return nil
			}
		}
		e.gone = true
		res.Deleted = append(res.Deleted, ExpiredPath{Path: e.path, NARSize: e.size, LastAccess: accessTime(e.last), Reason: reason})
		res.DeletedNARBytes += e.size
		return nil
	}
	// Oldest first, so that both passes delete in access order.
	slices.SortFunc(paths, func(a, b retained) int {
		if c := cmp.Compare(a.last, b.last); c != 0 {
			return c
		}
		return slices.Compare(a.d[:], b.d[:])
	})
	if r.MaxAge > 0 {
		cutoff := accessMinutes(now.Add(-r.MaxAge))
		for i := range paths {
			if e := &paths[i]; !e.pinned && e.last < cutoff {
				if err := expire(e, ExpiredAge); err != nil {
					return res, err
				}
			}
		}
	}
	var total uint64
	for _, e := range paths {
		if !e.gone {
			total += e.size
		}
	}
	if r.MaxSize > 0 {
		for i := 0; i < len(paths) && total > r.MaxSize; i++ {
			if e := &paths[i]; !e.pinned && !e.gone {
				if err := expire(e, ExpiredSize); err != nil {
					return res, err
				}
				if e.gone {
					total -= e.size
				}
			}
		}
	}
	for _, e := range paths {
		if !e.gone {
			res.Paths++
			if pins[e.d] {
				res.Pinned++
			}
		}
	}
	if len(res.Deleted) > 0 && !r.DryRun {
		if err := x.meta.Sync(ctx); err != nil {
			return res, err
		}
	}
	res.NARBytes = total
	res.Fits = r.MaxSize == 0 || total <= r.MaxSize
	return res, nil
}

// recordFirstSeen writes now as the access time of paths that had none,
// and removes the access records left of paths that are gone (orphans),
// in batches, each path checked under the lock.
func (x *Index) recordFirstSeen(ctx context.Context, first []PathDigest, now uint32, orphans map[PathDigest]uint32) error {
	x.access.mu.Lock()
	for _, d := range first {
		if x.access.pending == nil {
			x.access.pending = make(map[PathDigest]uint32)
		}
		x.access.pending[d] = max(x.access.pending[d], now)
	}
	x.access.mu.Unlock()
	if err := x.FlushAccess(ctx); err != nil {
		return fmt.Errorf("store: recording first access times: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var records []castore.MetaRecord
	for d := range orphans {
		_, err := x.meta.GetMeta(ctx, KindPathInfo, d[:])
		if err == nil {
			continue // put since the scan
		}
		if !errors.Is(err, castore.ErrNotFound) {
			return err
		}
		records = append(records, castore.MetaRecord{Kind: metaKindAccess, Key: append([]byte(nil), d[:]...), Delete: true})
	}
	if len(records) == 0 {
		return nil
	}
	return x.meta.SetMeta(ctx, records...)
}

// deleteIfUnused deletes the path whose hash is d unless it is pinned or
// was accessed after minute seen, and reports whether it did. The delete
// is not synced.
func (x *Index) deleteIfUnused(ctx context.Context, d PathDigest, seen uint32) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	pinned, err := x.pinned(ctx, d)
	if err != nil || pinned {
		return false, err
	}
	x.access.mu.Lock()
	pm := x.access.pending[d]
	x.access.mu.Unlock()
	if pm > seen {
		return false, nil
	}
	v, err := x.meta.GetMeta(ctx, metaKindAccess, d[:])
	switch {
	case err == nil:
		m, err := decodeAccess(d[:], v)
		if err != nil {
			return false, err
		}
		if m > seen {
			return false, nil
		}
	case !errors.Is(err, castore.ErrNotFound):
		return false, err
	}
	return x.deleteLocked(ctx, d)
}
