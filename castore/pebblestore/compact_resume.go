package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// An interrupted compaction is resumed from a marker: before it writes a
// frame, a compaction records (synced) under 'm' "compacting" what it
// chose, and the batch that unregisters its source frames deletes the
// record. A record found later means a compaction stopped (crash, kill,
// cancel) after choosing: CompactDue reports work whatever the age of the
// hot frames, and the next compaction takes at least what that one took
// (the hot frames it took, every run it was merging and the part of its
// own run already written), so that a merge is not left half done until
// new data arrives.
var compactingKey = []byte{pebbleKindMeta, 'c', 'o', 'm', 'p', 'a', 'c', 't', 'i', 'n', 'g'}

// compactMarker is what an interrupted compaction had chosen.
type compactMarker struct {
	cutoff time.Time // hot frames created before this were taken
	into   uint64    // the run it was writing
	full   bool
}

func (m compactMarker) encode() []byte {
	b := []byte{0}
	if m.full {
		b[0] = 1
	}
	b = binary.AppendUvarint(b, uint64(m.cutoff.UnixNano()))
	return binary.AppendUvarint(b, m.into)
}

func decodeCompactMarker(v []byte) (compactMarker, error) {
	var m compactMarker
	if len(v) < 3 || v[0] > 1 {
		return m, fmt.Errorf("%w: compaction marker %x", castore.ErrCorrupt, v)
	}
	m.full = v[0] == 1
	cutoff, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return m, fmt.Errorf("%w: compaction marker %x", castore.ErrCorrupt, v)
	}
	into, k := binary.Uvarint(v[1+n:])
	if k <= 0 || 1+n+k != len(v) {
		return m, fmt.Errorf("%w: compaction marker %x", castore.ErrCorrupt, v)
	}
	m.cutoff, m.into = time.Unix(0, int64(cutoff)), into
	return m, nil
}

// readCompactMarker returns the marker of an interrupted compaction, if
// there is one.
func readCompactMarker(ctx context.Context, db kvDB) (compactMarker, bool, error) {
	var m compactMarker
	err := get(ctx, db, compactingKey, "compaction marker", func(v []byte) (err error) {
		m, err = decodeCompactMarker(v)
		return err
	})
	if errors.Is(err, errNoKey) {
		return m, false, nil
	}
	return m, err == nil, err
}

// writeCompactMarker records, synced, what a compaction is about to
// rewrite.
func writeCompactMarker(ctx context.Context, db kvDB, m compactMarker) error {
	if err := db.set(ctx, compactingKey, m.encode(), true); err != nil {
		return pebbleError(err, "compaction marker")
	}
	return nil
}
