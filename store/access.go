package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// metaKindAccess keys when each store path was last uploaded or
// downloaded: 20-byte store path digest → uint32 big-endian minutes since
// the Unix epoch. One record per path, written with the PathInfo by Put,
// removed with it by Delete, and refreshed from reads in batches
// (RecordAccess, FlushAccess).
const metaKindAccess byte = 'A'

// AccessRefresh is how stale a path's recorded access time may grow
// before a read records it again: access times serve retention, which
// counts in days, so a path read all the time costs one write an hour.
const AccessRefresh = time.Hour

// maxAccessKnown bounds the access times remembered as written (about 60
// bytes each); past it the memory is dropped, and each path read again is
// written once more.
const maxAccessKnown = 1 << 20

// accessTimes holds reads not yet written and what was written lately.
type accessTimes struct {
	mu      sync.Mutex
	pending map[PathDigest]uint32 // minutes, to write at the next flush
	written map[PathDigest]uint32 // minutes recorded, as far as known
}

// accessMinutes is t in whole minutes since the Unix epoch (0 before it).
func accessMinutes(t time.Time) uint32 {
	m := t.Unix() / 60
	if m < 0 {
		return 0
	}
	if m > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(m)
}

func accessTime(m uint32) time.Time { return time.Unix(int64(m)*60, 0).UTC() }

func encodeAccess(m uint32) []byte { return binary.BigEndian.AppendUint32(nil, m) }

func decodeAccess(d []byte, v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: access record of %x has %d bytes, want 4", castore.ErrCorrupt, d, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

// WithClock sets the clock access times are taken from (default
// time.Now): for tests.
func WithClock(now func() time.Time) IndexOption {
	return func(x *Index) { x.now = now }
}

// RecordAccess notes that the store path whose hash is d was just read
// (its narinfo or NAR served). It only touches memory: FlushAccess writes
// what was noted, one record per path, and a path whose recorded time is
// less than AccessRefresh old is not noted again. Safe for concurrent use;
// meant to be called on every read.
func (x *Index) RecordAccess(d PathDigest) {
	m := accessMinutes(x.clock())
	a := &x.access
	a.mu.Lock()
	defer a.mu.Unlock()
	if w, ok := a.written[d]; ok && m < w+uint32(AccessRefresh/time.Minute) {
		return
	}
	if a.pending == nil {
		a.pending = make(map[PathDigest]uint32)
	}
	if m > a.pending[d] {
		a.pending[d] = m
	}
}

// FlushAccess writes the access times RecordAccess noted, in batches of
// flushBatch, skipping paths deleted since (not synced: access times lost
// in a crash cost only a little retention accuracy). A server calls it
// every few seconds and once before it closes the store.
func (x *Index) FlushAccess(ctx context.Context) error {
	a := &x.access
	a.mu.Lock()
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	batch := make(map[PathDigest]uint32, min(len(pending), flushBatch))
	for d, m := range pending {
		batch[d] = m
		delete(pending, d)
		if len(batch) == flushBatch || len(pending) == 0 {
			if err := x.flushAccess(ctx, batch); err != nil {
				x.requeueAccess(batch)
				x.requeueAccess(pending)
				return err
			}
			clear(batch)
		}
	}
	return nil
}

// flushBatch bounds the access times one write holds, and so how long
// FlushAccess holds the index's lock at a time.
const flushBatch = 1024

// flushAccess writes one batch of access times, under the index's lock so
// that a path deleted meanwhile gets none.
func (x *Index) flushAccess(ctx context.Context, batch map[PathDigest]uint32) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	records := make([]castore.MetaRecord, 0, len(batch))
	for d, m := range batch {
		_, err := x.meta.GetMeta(ctx, KindPathInfo, d[:])
		if errors.Is(err, castore.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		records = append(records, castore.MetaRecord{Kind: metaKindAccess, Key: append([]byte(nil), d[:]...), Value: encodeAccess(m)})
	}
	if len(records) == 0 {
		return nil
	}
	if err := x.meta.SetMeta(ctx, records...); err != nil {
		return fmt.Errorf("store: writing %d access times: %w", len(records), err)
	}
	x.access.mu.Lock()
	defer x.access.mu.Unlock()
	for _, r := range records {
		var d PathDigest
		copy(d[:], r.Key)
		x.access.noteWritten(d, batch[d])
	}
	return nil
}

// requeueAccess puts back times a flush failed to write.
func (x *Index) requeueAccess(pending map[PathDigest]uint32) {
	a := &x.access
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = make(map[PathDigest]uint32)
	}
	for d, m := range pending {
		if m > a.pending[d] {
			a.pending[d] = m
		}
	}
}

// noteWritten remembers that m is recorded for d; a.mu is held.
func (a *accessTimes) noteWritten(d PathDigest, m uint32) {
	if a.written == nil || len(a.written) >= maxAccessKnown {
		a.written = make(map[PathDigest]uint32)
	}
	a.written[d] = m
}

// forget drops what is noted of d (deleted); a.mu is held by nobody.
func (a *accessTimes) forget(d PathDigest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, d)
	delete(a.written, d)
}

// LastAccess returns when the store path whose hash is d was last
// uploaded or read, to the minute, counting reads not yet flushed; ok is
// false when nothing is recorded (a path stored before access times were
// kept).
func (x *Index) LastAccess(ctx context.Context, d PathDigest) (t time.Time, ok bool, err error) {
	x.access.mu.Lock()
	pm, pending := x.access.pending[d]
	x.access.mu.Unlock()
	v, err := x.meta.GetMeta(ctx, metaKindAccess, d[:])
	if errors.Is(err, castore.ErrNotFound) {
		if pending {
			return accessTime(pm), true, nil
		}
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	m, err := decodeAccess(d[:], v)
	if err != nil {
		return time.Time{}, false, err
	}
	return accessTime(max(m, pm)), true, nil
}

// clock returns the index's time now.
func (x *Index) clock() time.Time {
	if x.now != nil {
		return x.now()
	}
	return time.Now()
}

// accessRecord is the record Put writes beside a PathInfo: accessed now.
func (x *Index) accessRecord(d PathDigest) (castore.MetaRecord, uint32) {
	m := accessMinutes(x.clock())
	return castore.MetaRecord{Kind: metaKindAccess, Key: append([]byte(nil), d[:]...), Value: encodeAccess(m)}, m
}

// accessWritten notes that m was recorded for d.
func (x *Index) accessWritten(d PathDigest, m uint32) {
	x.access.mu.Lock()
	defer x.access.mu.Unlock()
	if m >= x.access.pending[d] {
		delete(x.access.pending, d)
	}
	x.access.noteWritten(d, m)
}
