package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// metaKindPin keys the pinned store paths, which retention never deletes:
// 20-byte store path digest → uint64 big-endian Unix seconds when pinned
// ‖ the store path's base name. Delete removes a path's pin with it.
const metaKindPin byte = 'P'

// Pin is a pinned store path.
type Pin struct {
	// Path is the store path's base name.
	Path string `json:"path"`
	// Since is when it was pinned.
	Since time.Time `json:"since"`
}

// Pin pins the store path whose hash is d, durably, so that Expire never
// deletes it. It reports whether the path was not pinned already. A path
// not in the index is ErrNotFound: pins name paths that exist.
func (x *Index) Pin(ctx context.Context, d PathDigest) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	p, err := x.Get(ctx, d)
	if err != nil {
		return false, err
	}
	pinned, err := x.pinned(ctx, d)
	if err != nil || pinned {
		return false, err
	}
	v := binary.BigEndian.AppendUint64(nil, uint64(x.clock().Unix()))
	v = append(v, p.Path...)
	if err := x.meta.SetMeta(ctx, castore.MetaRecord{Kind: metaKindPin, Key: d[:], Value: v}); err != nil {
		return false, err
	}
	return true, x.meta.Sync(ctx)
}

// Unpin removes the pin of the store path whose hash is d, durably, and
// reports whether there was one.
func (x *Index) Unpin(ctx context.Context, d PathDigest) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	pinned, err := x.pinned(ctx, d)
	if err != nil || !pinned {
		return false, err
	}
	if err := x.meta.SetMeta(ctx, castore.MetaRecord{Kind: metaKindPin, Key: d[:], Delete: true}); err != nil {
		return false, err
	}
	return true, x.meta.Sync(ctx)
}

// Pinned reports whether the store path whose hash is d is pinned.
func (x *Index) Pinned(ctx context.Context, d PathDigest) (bool, error) {
	return x.pinned(ctx, d)
}

func (x *Index) pinned(ctx context.Context, d PathDigest) (bool, error) {
	_, err := x.meta.GetMeta(ctx, metaKindPin, d[:])
	if errors.Is(err, castore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Pins calls fn for every pinned path, in order of store path digest,
// stopping at fn's first error.
func (x *Index) Pins(ctx context.Context, fn func(Pin) error) error {
	return x.meta.ScanMeta(ctx, metaKindPin, nil, func(k, v []byte) error {
		if len(v) < 8 {
			return fmt.Errorf("%w: pin record of %x has %d bytes", castore.ErrCorrupt, k, len(v))
		}
		return fn(Pin{Path: string(v[8:]), Since: time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()})
	})
}
