package pebblestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// The frame source: frames handed out as stored, for servers that send
// whole frames rather than their chunks one by one (see
// castore.FrameSource). It reads the registry and the object store only,
// never the decoded-frame cache.

var _ castore.FrameSource = (*Store)(nil)

// FrameMeta implements castore.FrameSource, from the frame's registry
// record.
func (s *Store) FrameMeta(ctx context.Context, name castore.Digest) (castore.FrameMeta, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return castore.FrameMeta{}, err
	}
	defer s.mu.RUnlock()
	return frameMeta(ctx, db, name)
}

func frameMeta(ctx context.Context, db kvDB, name castore.Digest) (castore.FrameMeta, error) {
	m := castore.FrameMeta{Name: name}
	err := get(ctx, db, pebbleKey(pebbleKindFrame, name), "frame", func(v []byte) error {
		f, err := decodeFrameInfo(name, v)
		if err != nil {
			return err
		}
		if f.decoded > MaxFrameSize || f.stored > MaxFrameSize+MaxFrameSize/8 {
			return fmt.Errorf("%w: frame %s registry record: sizes %d stored, %d decoded", castore.ErrCorrupt, frameName(name), f.stored, f.decoded)
		}
		m.StoredSize, m.DecodedSize, m.Filtered = f.stored, f.decoded, f.filtered
		return nil
	})
	if errors.Is(err, errNoKey) {
		return m, fmt.Errorf("%w: frame %s", castore.ErrNotFound, frameName(name))
	}
	return m, err
}

// GetFrame implements castore.FrameSource: the frame must be registered,
// and its object is read whole and checked against its name and
// registered size.
func (s *Store) GetFrame(ctx context.Context, name castore.Digest, dst []byte) ([]byte, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return dst, err
	}
	defer s.mu.RUnlock()
	m, err := frameMeta(ctx, db, name)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	out, err := s.objects.GetObject(ctx, frameName(name), 0, -1, dst)
	if errors.Is(err, castore.ErrNotFound) {
		// Retired meanwhile (compaction unregisters a frame, then
		// deletes it), or lost.
		if _, merr := frameMeta(ctx, db, name); errors.Is(merr, castore.ErrNotFound) {
			return dst, merr
		}
		return dst, fmt.Errorf("%w: frame %s is registered but its object is missing: %v", castore.ErrCorrupt, frameName(name), err)
	}
	if err != nil {
		return dst, fmt.Errorf("frame %s: %w", frameName(name), err)
	}
	obj := out[start:]
	if uint64(len(obj)) != m.StoredSize {
		return dst, fmt.Errorf("%w: frame %s: %d bytes stored, its record says %d", castore.ErrCorrupt, frameName(name), len(obj), m.StoredSize)
	}
	if got := castore.Hash(obj); got != name {
		return dst, fmt.Errorf("%w: frame %s: its %d bytes hash to %s", castore.ErrCorrupt, frameName(name), len(obj), got)
	}
	return out, nil
}
