package pebblestore

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"

	"github.com/nixcas/nixcas/castore"
)

// markSet is the set of digests a garbage collection keeps: a temporary
// Pebble database under the data directory, keyed like the store (kind
// byte ‖ digest, empty values), so that a scan of it runs in the same
// order as a scan of the store's own keys and the two merge-join. Its
// memory is bounded by its memtable and block cache (markSetMemory in
// all), whatever the number of digests: 100 million chunks make about
// 3.5 GB of keys on disk, not in memory. It has no write-ahead log: it
// lives for one collection, and a crash leaves a directory the next
// collection removes. Safe for concurrent use.
type markSet struct {
	dir string
	db  *pebble.DB
	// added counts the marks added outside the collector's own walk (by
	// uses): a sweep whose count has not moved since it read the set
	// need not look again.
	added atomic.Int64
}

// markSetMemory is what a mark set's memtables and block cache take at
// most: two 16 MiB memtables and a 16 MiB cache.
const (
	markMemTable  = 16 << 20
	markCacheSize = 16 << 20
	markSetMemory = 2*markMemTable + markCacheSize
)

// openMarkSet creates an empty mark set in dir, removing what a crashed
// collection left there.
func openMarkSet(dir string) (*markSet, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("castore: gc: removing old mark set: %w", err)
	}
	cache := pebble.NewCache(markCacheSize)
	defer cache.Unref()
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: markMemTable,
		DisableWAL:   true,
		Logger:       pebbleLogger,
	}
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("castore: gc: mark set: %w", err)
	}
	return &markSet{dir: dir, db: db}, nil
}

// close closes and removes the mark set.
func (m *markSet) close() error {
	err := m.db.Close()
	if rerr := os.RemoveAll(m.dir); err == nil && rerr != nil {
		err = fmt.Errorf("castore: gc: removing mark set: %w", rerr)
	}
	return err
}

// add marks d as kept under kind.
func (m *markSet) add(kind byte, d castore.Digest) error {
	if err := m.db.Set(pebbleKey(kind, d), nil, pebble.NoSync); err != nil {
		return fmt.Errorf("castore: gc: mark set: %w", err)
	}
	m.added.Add(1)
	return nil
}

// has reports whether d is marked under kind.
func (m *markSet) has(kind byte, d castore.Digest) (bool, error) {
	_, closer, err := m.db.Get(pebbleKey(kind, d))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("castore: gc: mark set: %w", err)
	}
	return true, closer.Close()
}

// markBatch adds marks in batches (one commit per markBatchSize marks)
// for the collector's own walk; touches from writers go straight to the
// set.
type markBatch struct {
	m *markSet
	b *pebble.Batch
}

const markBatchSize = 1 << 16

func (m *markSet) newBatch() *markBatch { return &markBatch{m: m, b: m.db.NewIndexedBatch()} }

func (mb *markBatch) add(kind byte, d castore.Digest) error {
	_ = mb.b.Set(pebbleKey(kind, d), nil, nil)
	if mb.b.Count() >= markBatchSize {
		return mb.flush()
	}
	return nil
}

// has reports whether d is marked, committed or pending in this batch
// (an indexed batch reads through to the set).
func (mb *markBatch) has(kind byte, d castore.Digest) (bool, error) {
	_, closer, err := mb.b.Get(pebbleKey(kind, d))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("castore: gc: mark set: %w", err)
	}
	return true, closer.Close()
}

func (mb *markBatch) flush() error {
	if mb.b.Count() == 0 {
		return nil
	}
	if err := mb.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("castore: gc: mark set: %w", err)
	}
	mb.b.Close()
	mb.b = mb.m.db.NewIndexedBatch()
	return nil
}

func (mb *markBatch) close() error {
	err := mb.flush()
	mb.b.Close()
	return err
}
