package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/nixcas/nixcas/castore"
)

// The database layer
//
// A Store keeps every record (the layout in doc.go) in a kvDB: ordered
// byte keys, atomic write batches, and the counters. Two implement it:
// pebbleKV, one embedded Pebble database that one process owns (the
// default), and pgKV, a table in PostgreSQL that several processes share
// (pg.go). All of the store's logic (frames, packer, compaction,
// collection) runs on either; where another process may write the same
// database (shared), the store's in-process locks no longer exclude every
// concurrent writer, and the database's own conditions take over:
// insert of a new key fails the batch when the key exists (a chunk put on
// two processes at once is stored and counted once), a batch's reads lock
// what they read until it commits, queue sequence numbers come from the
// database, and uses are recorded under the collection gate (useKey,
// gcuse.go).

// errNoKey: the key is not in the database.
var errNoKey = errors.New("castore: no such key")

// errKeyExists: a batch's insert met a key that exists; nothing of the
// batch was applied.
var errKeyExists = errors.New("castore: key exists")

// kvDB is the database of a Store. Keys and values handed to it may be
// reused by the caller once a call returns.
type kvDB interface {
	// get calls fn with the value of key, valid only during the call; a
	// missing key is errNoKey.
	get(ctx context.Context, key []byte, fn func(v []byte) error) error
	// getMany calls fn(i, v) for each keys[i] that exists, with its value
	// v valid only during the call, in no particular order; a key given
	// twice is reported at each of its places. On PostgreSQL it is one
	// query, where a get per key would be a round trip each.
	getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error
	// getManySmall is getMany for callers that need a value only when it
	// is small: fn(i, v, size) gets the value when it is at most n bytes,
	// else v nil, and the value's size either way. A larger value is not
	// read (on Pebble a separated value stays in its blob file; on
	// PostgreSQL it is not sent).
	getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error
	// has reports whether key exists, without reading its value where
	// that costs more than the key.
	has(ctx context.Context, key []byte) (bool, error)
	// hasMany calls fn(i) for each keys[i] that exists, in no particular
	// order, reading no values: what getMany does for a caller that
	// needs only to know which exist. A key given twice is reported at
	// each of its places.
	hasMany(ctx context.Context, keys [][]byte, fn func(i int) error) error
	// newIter iterates over the keys in [lower, upper) in bytewise
	// order; upper nil means no upper bound. The iterator sees writes
	// committed before it was made, and possibly later ones.
	newIter(ctx context.Context, lower, upper []byte) (kvIter, error)
	// newBatch starts an atomic write batch.
	newBatch() kvBatch
	// set writes one key alone, synced when sync is set.
	set(ctx context.Context, key, value []byte, sync bool) error
	// deleteRange deletes the keys in [lower, upper).
	deleteRange(ctx context.Context, lower, upper []byte) error
	// counters returns the counter vector (see doc.go).
	counters(ctx context.Context) ([numCounters]uint64, error)
	// nextSeq returns a queue sequence number greater than every one
	// used before, by any process.
	nextSeq(ctx context.Context) (uint64, error)
	// initSeq records last as the highest queue sequence number in use
	// (loadQueue, at open).
	initSeq(last uint64)
	// sync makes every write that returned before it durable.
	sync(ctx context.Context) error
	// shared reports whether other processes may write the database at
	// the same time.
	shared() bool
	// recordUse writes the use record useKey (unsynced) and, when item
	// is not nil, reports whether item exists, in one step that no
	// collection's deletion batch (under gcLock exclusive) divides.
	// then, when not nil, is a batch that read nothing, committed
	// (unsynced) after the record, in the same step where the database
	// can (one round trip on PostgreSQL); a failed commit of then
	// leaves no record either.
	recordUse(ctx context.Context, useKey, item []byte, then kvBatch) (bool, error)
	// gcLock excludes other processes' collections and uses of the
	// gate; the returned unlock ends it. exclusive: uses too (held by
	// a collection around each deletion batch). Without exclusive it
	// is the lock that lets one process at a time collect. A database
	// of one process returns at once.
	// With exclusive it also returns the database to use while it is
	// held (the same one, or a view through the lock's connection).
	gcLock(ctx context.Context, exclusive bool) (db kvDB, unlock func(), err error)
	// name says which database this is, for errors: "pebble database
	// DIR", "postgres database HOST/NAME".
	name() string
	// close closes the database.
	close() error
}

// kvIter is an iterator of a kvDB, used as a Pebble iterator: First, then
// Next while Valid. Key and the value are valid until the next move.
type kvIter interface {
	First() bool
	Next() bool
	Valid() bool
	Key() []byte
	ValueAndErr() ([]byte, error)
	Error() error
	Close() error
}

// kvBatch is an atomic write batch. Writes are applied together at commit
// or not at all; close releases an uncommitted batch (safe after commit).
type kvBatch interface {
	// get is kvDB.get of the latest committed value; on a shared
	// database the key stays locked against other batches until the
	// batch commits or closes.
	get(ctx context.Context, key []byte, fn func(v []byte) error) error
	// getMany is kvDB.getMany of the latest committed values, locking
	// the keys as get does.
	getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error
	// getManySmall is kvDB.getManySmall of the latest committed values,
	// locking the keys as get does.
	getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error
	set(key, value []byte)
	// insert sets key, which the caller found absent: commit fails with
	// errKeyExists, applying nothing, should another writer have set it
	// since (on a shared database; one process excludes that with its
	// lock stripes).
	insert(key, value []byte)
	delete(key []byte)
	// addCounters adds delta to the counters (modulo 2^64).
	addCounters(delta []uint64)
	// size is the bytes of the writes so far, empty whether there are none.
	size() int
	empty() bool
	commit(ctx context.Context, sync bool) error
	close()
}

// pebbleKV is a kvDB in one Pebble database, open in one process.
type pebbleKV struct {
	db        *pebble.DB
	dir       string
	seq       atomic.Uint64 // last queue sequence number used
	cacheSize int64         // of the block cache
}

var _ kvDB = (*pebbleKV)(nil)

func (p *pebbleKV) get(_ context.Context, key []byte, fn func(v []byte) error) error {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return errNoKey
	}
	if err != nil {
		return pebbleError(err, fmt.Sprintf("get %c/%x", key[0], key[1:]))
	}
	// Pebble reports an error reading a separated value (a checksum
	// mismatch in a blob file, say) only when the closer is closed,
	// handing out an empty value meanwhile, so the closer's error takes
	// precedence over fn's.
	err = fn(v)
	if cerr := closer.Close(); cerr != nil {
		return pebbleError(cerr, fmt.Sprintf("get %c/%x", key[0], key[1:]))
	}
	return err
}

func (p *pebbleKV) getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error {
	return getEach(ctx, p.get, keys, fn)
}

// getManySmall looks the keys up through one iterator, as hasMany does,
// and reads only the values of at most n bytes: the size of a value is
// known without fetching it.
func (p *pebbleKV) getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error {
	it, err := p.db.NewIterWithContext(ctx, &hasIterOptions)
	if err != nil {
		return pebbleError(err, "lookup")
	}
	for i, key := range keys {
		if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
			// Each seek clears the iterator's error, so a miss is
			// checked at once: a failed read is not an absent key.
			if err := it.Error(); err != nil {
				it.Close()
				return pebbleError(err, "lookup")
			}
			continue
		}
		lv := it.LazyValue()
		size := lv.Len()
		var v []byte
		if size <= n {
			if v, err = it.ValueAndErr(); err != nil {
				it.Close()
				return pebbleError(err, fmt.Sprintf("get %c/%x", key[0], key[1:]))
			}
		}
		if err := fn(i, v, size); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return pebbleError(err, "lookup")
	}
	return nil
}

// getEach is getMany as one get per key.
func getEach(ctx context.Context, get func(context.Context, []byte, func([]byte) error) error, keys [][]byte, fn func(i int, v []byte) error) error {
	for i, k := range keys {
		err := get(ctx, k, func(v []byte) error { return fn(i, v) })
		if err != nil && !errors.Is(err, errNoKey) {
			return err
		}
	}
	return nil
}

// has does not read the value. db.Get would fetch it, which for a
// separated chunk is a read of up to 256 KiB from a blob file; an
// iterator's key alone does not (values are fetched lazily), and
// SeekPrefixGE consults the bloom filters, so a miss usually reads no data
// block at all. (BenchmarkPebbleHasChunk: about 5 µs, hit or miss, against
// 35 µs for GetChunk of a 256 KiB chunk in the block cache.)
func (p *pebbleKV) has(ctx context.Context, key []byte) (bool, error) {
	it, err := p.db.NewIterWithContext(ctx, &hasIterOptions)
	if err != nil {
		return false, pebbleError(err, "lookup")
	}
	found := it.SeekPrefixGE(key) && bytes.Equal(it.Key(), key)
	if err := it.Close(); err != nil {
		return false, pebbleError(err, "lookup")
	}
	return found, nil
}

// hasMany is has for each key, through one iterator.
func (p *pebbleKV) hasMany(ctx context.Context, keys [][]byte, fn func(i int) error) error {
	// No value is that small: none is read.
	return p.getManySmall(ctx, keys, -1, func(i int, _ []byte, _ int) error { return fn(i) })
}

// hasIterOptions: a lookup reads the bloom filters of every level, the
// last (L6) included, which Pebble skips by default. Most chunk lookups
// are for chunks not stored (each new chunk is looked up before its put),
// and without L6's filters each such lookup read an index and a data
// block of L6: once the chunk index outgrew the block cache, absent
// lookups went to disk (measured on a store of 3.3M records with a 32 MiB
// cache: 0.87 block cache misses per absent lookup).
var hasIterOptions = pebble.IterOptions{UseL6Filters: true}

func (p *pebbleKV) newIter(ctx context.Context, lower, upper []byte) (kvIter, error) {
	it, err := p.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, pebbleError(err, "iterate")
	}
	return it, nil
}

func (p *pebbleKV) newBatch() kvBatch { return &pebbleBatch{p: p, b: p.db.NewBatch()} }

func (p *pebbleKV) set(_ context.Context, key, value []byte, sync bool) error {
	if err := p.db.Set(key, value, pebbleSync(sync)); err != nil {
		return pebbleError(err, fmt.Sprintf("set %c/%x", key[0], key[1:]))
	}
	return nil
}

func (p *pebbleKV) deleteRange(_ context.Context, lower, upper []byte) error {
	if err := p.db.DeleteRange(lower, upper, pebble.NoSync); err != nil {
		return pebbleError(err, "delete range")
	}
	return nil
}

func (p *pebbleKV) counters(ctx context.Context) ([numCounters]uint64, error) {
	var c [numCounters]uint64
	err := p.get(ctx, pebbleCountersKey, func(v []byte) error {
		return decodeCounters(&c, v)
	})
	if err != nil && !errors.Is(err, errNoKey) {
		return c, err
	}
	return c, nil
}

func (p *pebbleKV) nextSeq(context.Context) (uint64, error) { return p.seq.Add(1), nil }
func (p *pebbleKV) initSeq(last uint64)                     { p.seq.Store(last) }

// sync commits an empty, synced batch (a LogData record): the write-ahead
// log is synced in order, so every write that returned before is durable
// when it returns. Unlike a memtable flush this costs one fsync.
func (p *pebbleKV) sync(context.Context) error {
	if err := p.db.LogData(nil, pebble.Sync); err != nil {
		return pebbleError(err, "sync")
	}
	return nil
}

func (p *pebbleKV) shared() bool { return false }

func (p *pebbleKV) name() string { return "pebble database " + p.dir }

// recordUse needs no lock: a collection in this process, the only one,
// learns of uses at once (gcuse.go).
func (p *pebbleKV) recordUse(ctx context.Context, useKey, item []byte, then kvBatch) (bool, error) {
	if err := p.set(ctx, useKey, nil, false); err != nil {
		return false, err
	}
	ok := false
	if item != nil {
		var err error
		if ok, err = p.has(ctx, item); err != nil {
			return false, err
		}
	}
	if then != nil {
		return ok, then.commit(ctx, false)
	}
	return ok, nil
}

func (p *pebbleKV) gcLock(context.Context, bool) (kvDB, func(), error) { return p, func() {}, nil }

func (p *pebbleKV) close() error { return p.db.Close() }

func pebbleSync(sync bool) *pebble.WriteOptions {
	if sync {
		return pebble.Sync
	}
	return pebble.NoSync
}

// pebbleBatch is a kvBatch of a pebbleKV. Its counter deltas are one
// Merge operand, added at commit.
type pebbleBatch struct {
	p     *pebbleKV
	b     *pebble.Batch
	delta []uint64
}

func (b *pebbleBatch) get(ctx context.Context, key []byte, fn func(v []byte) error) error {
	return b.p.get(ctx, key, fn)
}

func (b *pebbleBatch) getMany(ctx context.Context, keys [][]byte, fn func(i int, v []byte) error) error {
	return b.p.getMany(ctx, keys, fn)
}

func (b *pebbleBatch) getManySmall(ctx context.Context, keys [][]byte, n int, fn func(i int, v []byte, size int) error) error {
	return b.p.getManySmall(ctx, keys, n, fn)
}

func (b *pebbleBatch) set(key, value []byte)    { _ = b.b.Set(key, value, nil) }
func (b *pebbleBatch) insert(key, value []byte) { _ = b.b.Set(key, value, nil) }
func (b *pebbleBatch) delete(key []byte)        { _ = b.b.Delete(key, nil) }

func (b *pebbleBatch) addCounters(delta []uint64) {
	if len(delta) > len(b.delta) {
		b.delta = append(b.delta, make([]uint64, len(delta)-len(b.delta))...)
	}
	for i, x := range delta {
		b.delta[i] += x
	}
}

func (b *pebbleBatch) size() int   { return int(b.b.Len()) + 8*len(b.delta) }
func (b *pebbleBatch) empty() bool { return b.b.Empty() && len(b.delta) == 0 }

func (b *pebbleBatch) commit(_ context.Context, sync bool) error {
	if len(b.delta) > 0 {
		_ = b.b.Merge(pebbleCountersKey, encodeCounters(b.delta), nil)
	}
	if err := b.b.Commit(pebbleSync(sync)); err != nil {
		return pebbleError(err, "commit")
	}
	return nil
}

func (b *pebbleBatch) close() { _ = b.b.Close() }

// decodeCounters adds the stored counter vector v into c.
func decodeCounters(c *[numCounters]uint64, v []byte) error {
	if len(v)%8 != 0 {
		return fmt.Errorf("%w: counters of %d bytes", castore.ErrCorrupt, len(v))
	}
	for i := 0; i < numCounters && 8*i < len(v); i++ {
		c[i] += binary.LittleEndian.Uint64(v[8*i:])
	}
	return nil
}
