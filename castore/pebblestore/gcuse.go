package pebblestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// Uses: what the garbage collector must not take from under a writer
//
// A chunk, blob index or directory is "used" when it is written or
// deduplicated against: PutChunk (new or already stored), HasChunk,
// PutBlob, PutDirectory, and RecordUse (the server's blob and directory
// existence queries). Two records keep used items from a collection:
//
//   - While a collection runs (its epoch), every use is added to the
//     collection's mark set at once, and so is everything below a used
//     directory or blob (its subtree, read from the store); reads of a
//     directory or blob index (GetDirectory, GetBlobIndex: how a PathInfo
//     put checks its tree) count as uses too, so a PathInfo recorded
//     after the collection listed the live ones keeps its whole tree.
//   - With Options.RecordUses, every use is also persisted as a use
//     record, 'R' ‖ unix milliseconds (8, BE) ‖ kind ‖ digest, in the
//     same database.
//     A collection starting at T treats the records of minutes from
//     T − grace on as live roots (subtrees included), and deletes the
//     older ones. This covers uploads whose PathInfo comes later, across
//     processes and restarts (`nixcas gc` runs while the server is down).
//
// Why this is sound. A collection first publishes its mark set (gcMarks),
// then reads the use records, then marks from the live roots, then sweeps.
// A use persists its record before it looks at gcMarks: if it saw no mark
// set, its record was committed before the collection read the records,
// so the collection sees it. The sweep then deletes an item only if it is
// not in the mark set, checked and deleted in one step that excludes a
// concurrent use of the same item:
//
//   - chunks: a use adds the chunk to the mark set holding the chunk's
//     lock stripe (lockStripes), before it looks the chunk up; the sweep
//     holds the stripes of a batch of candidates while it re-checks the
//     mark set and commits their deletion. So either the use came first
//     and the chunk stays, or the deletion is committed before the use
//     looks, finds the chunk missing, and stores it again.
//   - directories and blob indexes: a use marks the item and its whole
//     subtree holding the gate (gcGate) for reading; the sweep of
//     directories and blob indexes holds it for writing. So when the sweep
//     checks, every directory or blob in the mark set has its subtree in
//     it too, and what the sweep deletes no later use can reach: after the
//     sweep, a use of a surviving directory finds its whole subtree
//     marked (it was marked with it) or stored anew by its writer.
//     The chunk sweep takes the gate for writing per batch as well, so a
//     subtree being marked is never half done when a chunk is checked.
//
// Directory and blob index puts and reads wait while the gate is held for
// writing: for the directory and blob index sweep (one pass over those
// keys) and for each batch of the chunk sweep.
//
// Across processes (a shared database, OpenPostgres). The mark set and
// the gate live in the collecting process only; another process's uses
// reach the collection through their use records (RecordUses), under one
// more rule. A use writes its record and looks the item up in one step
// that takes the uses lock shared (kvDB.recordUse: a PostgreSQL advisory
// lock, in one transaction with the insert and the lookup); the
// collection takes it exclusively for the whole directory and blob index
// sweep and for each chunk deletion batch, and having taken it, reads the
// use records again (those stamped since its previous reading less
// gcUseMargin, and not before its grace period) and marks what they reach
// before it checks and deletes. So a use either committed its record
// before the collection's reading, which then keeps the item (and, for a
// directory or blob, its subtree, as the gate does in one process), or
// looked the item up after the deletion committed, found it missing and
// stores it again. One process collects at a time (kvDB.gcLock). Reads
// that count as uses in one process (GetDirectory and GetBlobIndex) write
// no record; a PathInfo put, which names a tree by reading it, records a
// use of its root first (store.Index.Put through RecordUse), so a put in
// another process during a collection keeps its whole tree, given a grace
// period longer than the put takes.

// pebbleKindUse keys use records (see above).
const pebbleKindUse byte = 'R'

// useKey returns the use record key of d used at t.
func useKey(t time.Time, kind byte, d castore.Digest) []byte {
	k := make([]byte, 0, 1+8+1+castore.DigestSize)
	k = append(k, pebbleKindUse)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixMilli()))
	k = append(k, kind)
	return append(k, d[:]...)
}

// gcState groups the collector's fields of a Store.
type gcState struct {
	gcRunning sync.Mutex // one collection at a time
	gcGate    sync.RWMutex
	gcMarks   atomic.Pointer[markSet] // set while a collection runs
	// A collection on a shared database: its grace period's start, and
	// when it last read the use records.
	gcCutoff, gcRescan time.Time
	recordUses         bool
}

// persistUse writes a use record of d, unless the store does not record
// uses. The write is not synced: a use that a crash loses was not
// followed by anything durable that relies on it.
//
// item, when not nil, is the key of the item used: persistUse then
// reports whether it exists, looked up in one step with the record that
// no collection's deletion batch divides (kvDB.recordUse), which is what
// keeps it from a collection in another process (see above).
//
// then, when not nil, is a batch that read nothing, committed after the
// record, in one round trip with it where the database allows
// (kvDB.recordUse).
func (s *Store) persistUse(ctx context.Context, db kvDB, kind byte, d castore.Digest, item []byte, then kvBatch) (bool, error) {
	if !s.recordUses || s.readOnly {
		ok := false
		if item != nil {
			var err error
			if ok, err = has(ctx, db, item); err != nil {
				return false, err
			}
		}
		if then != nil {
			return ok, then.commit(ctx, false)
		}
		return ok, nil
	}
	key := useKey(time.Now(), kind, d)
	if err := s.space.admit(len(key) + 16); err != nil {
		return false, err
	}
	ok, err := db.recordUse(ctx, key, item, then)
	if err != nil {
		return false, fmt.Errorf("record use of %s: %w", d, err)
	}
	return ok, nil
}

// useChunk records a use of chunk d (see above) and reports whether it is
// stored.
func (s *Store) useChunk(ctx context.Context, db kvDB, d castore.Digest) (bool, error) {
	key := pebbleKey(pebbleKindChunk, d)
	if db.shared() {
		ok, err := s.persistUse(ctx, db, pebbleKindChunk, d, key, nil)
		if err != nil {
			return false, err
		}
		return ok, s.markChunkUsed(d)
	}
	if _, err := s.persistUse(ctx, db, pebbleKindChunk, d, nil, nil); err != nil {
		return false, err
	}
	if err := s.markChunkUsed(d); err != nil {
		return false, err
	}
	return has(ctx, db, key)
}

// markChunkUsed adds chunk d to the mark set of a collection in progress.
func (s *Store) markChunkUsed(d castore.Digest) error {
	if s.gcMarks.Load() == nil {
		return nil
	}
	mu := s.stripe(d)
	mu.Lock()
	defer mu.Unlock()
	if m := s.gcMarks.Load(); m != nil {
		return m.add(pebbleKindChunk, d)
	}
	return nil
}

// sharedItem is the key of the item d of kind on a shared database, to be
// looked up with its use record (persistUse): the lookup that follows the
// record then cannot see an item a collection deletes afterwards.
func (s *Store) sharedItem(db kvDB, kind byte, d castore.Digest) []byte {
	if !db.shared() {
		return nil
	}
	return pebbleKey(kind, d)
}

// useBlob records a use of blob d; refs, when not nil, are its chunks
// (a blob being put), else they are read from its index. then, when not
// nil, is committed with the use record (persistUse), which persist must
// then be set for.
func (s *Store) useBlob(ctx context.Context, db kvDB, d castore.Digest, refs []castore.ChunkRef, persist bool, then kvBatch) error {
	if persist {
		if _, err := s.persistUse(ctx, db, pebbleKindBlobIndex, d, s.sharedItem(db, pebbleKindBlobIndex, d), then); err != nil {
			return err
		}
	}
	return s.withMarks(func(m *markSet) error {
		return s.markBlobUsed(ctx, db, m, d, refs)
	})
}

// withMarks calls mark with the mark set of the collection running, holding
// gcGate for reading (see above); with none running it does nothing.
func (s *Store) withMarks(mark func(*markSet) error) error {
	if s.gcMarks.Load() == nil {
		return nil
	}
	s.gcGate.RLock()
	defer s.gcGate.RUnlock()
	m := s.gcMarks.Load()
	if m == nil {
		return nil
	}
	return mark(m)
}

// markBlobUsed marks blob d and its chunks; the caller holds gcGate.
func (s *Store) markBlobUsed(ctx context.Context, db kvDB, m *markSet, d castore.Digest, refs []castore.ChunkRef) error {
	if ok, err := m.has(pebbleKindBlobIndex, d); err != nil || ok {
		return err
	}
	if refs == nil {
		var err error
		refs, err = s.getBlobIndex(ctx, db, d)
		if errors.Is(err, castore.ErrNotFound) {
			refs = []castore.ChunkRef{{Digest: d}} // a blob of one chunk, or none
		} else if err != nil {
			return err
		}
	}
	for _, c := range refs {
		mu := s.stripe(c.Digest)
		mu.Lock()
		err := m.add(pebbleKindChunk, c.Digest)
		mu.Unlock()
		if err != nil {
			return err
		}
	}
	// The blob last: a concurrent use that finds it marked finds its
	// chunks marked too.
	return m.add(pebbleKindBlobIndex, d)
}

// useDirectory records a use of directory d; dir, when not nil, is its
// contents (a directory being put), else they are read from the store.
func (s *Store) useDirectory(ctx context.Context, db kvDB, d castore.Digest, dir *castore.Directory, persist bool) error {
	if persist {
		if _, err := s.persistUse(ctx, db, pebbleKindDirectory, d, s.sharedItem(db, pebbleKindDirectory, d), nil); err != nil {
			return err
		}
	}
	return s.withMarks(func(m *markSet) error {
		return s.markTreeUsed(ctx, db, m, d, dir)
	})
}

// markTreeUsed marks directory d and everything below it that is not
// marked yet; the caller holds gcGate. A directory is marked after its
// subtree, so that a use that finds it marked finds all of it marked.
func (s *Store) markTreeUsed(ctx context.Context, db kvDB, m *markSet, d castore.Digest, dir *castore.Directory) error {
	if ok, err := m.has(pebbleKindDirectory, d); err != nil || ok {
		return err
	}
	if dir == nil {
		var err error
		if dir, err = s.getDirectory(ctx, db, d); errors.Is(err, castore.ErrNotFound) {
			return nil // not stored: its writer stores and uses its children
		} else if err != nil {
			return err
		}
	}
	for _, f := range dir.Files {
		if err := s.markBlobUsed(ctx, db, m, f.Digest, nil); err != nil {
			return fmt.Errorf("file %q: %w", f.Name, err)
		}
	}
	for _, sub := range dir.Directories {
		if err := s.markTreeUsed(ctx, db, m, sub.Digest, nil); err != nil {
			return fmt.Errorf("directory %q: %w", sub.Name, err)
		}
	}
	return m.add(pebbleKindDirectory, d)
}

// RecordUse records that a client was told the blob (kind 'b': a file of
// any number of chunks) or directory (kind 'd') d is stored, so that the
// garbage collector keeps it (see above). The server's existence queries
// call it; other kinds are ErrInvalid.
func (s *Store) RecordUse(ctx context.Context, kind castore.UseKind, d castore.Digest) error {
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	switch kind {
	case castore.UseBlob:
		return s.useBlob(ctx, db, d, nil, true, nil)
	case castore.UseDirectory:
		return s.useDirectory(ctx, db, d, nil, true)
	}
	return fmt.Errorf("%w: use of kind %d", castore.ErrInvalid, kind)
}
