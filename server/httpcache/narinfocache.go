package httpcache

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nixcas/nixcas/store"
)

// narInfoCache keeps rendered narinfos in memory, by store path digest,
// so that a narinfo served again costs no index read, PathInfo decoding
// or text rendering. It holds at most max bytes (text plus a fixed
// overhead per entry), in shards of two generations each: entries go
// into the current generation, a hit in the previous one moves the entry
// up, and when the current generation is full the previous one is
// dropped and the current one takes its place, so the entries dropped
// are those not used for the longest (roughly).
//
// A path changed (put or deleted) in this process is forgotten by
// invalidate, which the index calls (store.Index.OnChange). A narinfo
// rendered from a read that began before a change must not be kept after
// it: every change moves epoch first, and add keeps an entry only if the
// epoch is still the one its read began in (checked under the shard's
// lock, which invalidate takes after moving the epoch). When other
// processes may change the index too, ttl bounds how long an entry is
// served (0: until it is invalidated or dropped).
type narInfoCache struct {
	ttl    time.Duration
	genMax int64 // bytes of one shard's generation
	epoch  atomic.Uint64
	shards [narInfoShards]narInfoShard
	hits   atomic.Uint64
	misses atomic.Uint64
	size   atomic.Int64 // bytes held, over all shards
	now    func() time.Time
}

const (
	narInfoShards = 16
	// narInfoEntryOverhead is counted for each entry besides its text:
	// the key, the map slot, the slice header and the time.
	narInfoEntryOverhead = 80
)

type narInfoShard struct {
	mu       sync.Mutex
	cur, old map[store.PathDigest]narInfoEntry
	curBytes int64
	oldBytes int64
}

type narInfoEntry struct {
	text  []byte
	added int64 // unix nanoseconds, for ttl
}

func (e narInfoEntry) bytes() int64 { return int64(len(e.text)) + narInfoEntryOverhead }

// newNarInfoCache returns a cache of at most max bytes whose entries are
// served for at most ttl (0: no limit).
func newNarInfoCache(max int64, ttl time.Duration) *narInfoCache {
	c := &narInfoCache{ttl: ttl, genMax: max / narInfoShards / 2, now: time.Now}
	for i := range c.shards {
		c.shards[i].cur = make(map[store.PathDigest]narInfoEntry)
	}
	return c
}

func (c *narInfoCache) shard(d store.PathDigest) *narInfoShard {
	return &c.shards[binary.LittleEndian.Uint32(d[:4])%narInfoShards]
}

// get returns the cached narinfo of d, which the caller must not modify,
// or nil and the epoch to pass to add.
func (c *narInfoCache) get(d store.PathDigest) ([]byte, uint64) {
	// The epoch is read before the lookup: a change after it moves the
	// epoch, and add then keeps nothing.
	epoch := c.epoch.Load()
	s := c.shard(d)
	s.mu.Lock()
	e, ok := s.cur[d]
	if !ok {
		if e, ok = c.removeLocked(s.old, &s.oldBytes, d); ok {
			if !c.fresh(e) {
				ok = false
			} else {
				c.insertLocked(s, d, e)
			}
		}
	} else if !c.fresh(e) {
		c.removeLocked(s.cur, &s.curBytes, d)
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		return nil, epoch
	}
	c.hits.Add(1)
	return e.text, epoch
}

func (c *narInfoCache) fresh(e narInfoEntry) bool {
	return c.ttl <= 0 || c.now().UnixNano()-e.added < int64(c.ttl)
}

// add keeps text as d's narinfo, unless the index changed since the
// epoch get returned (text may then be out of date), or text alone is
// larger than a generation. The cache owns text from then on.
func (c *narInfoCache) add(d store.PathDigest, text []byte, epoch uint64) {
	e := narInfoEntry{text: text}
	if e.bytes() > c.genMax {
		return
	}
	if c.ttl > 0 {
		e.added = c.now().UnixNano()
	}
	s := c.shard(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.epoch.Load() != epoch {
		return
	}
	c.removeLocked(s.cur, &s.curBytes, d)
	c.insertLocked(s, d, e)
}

// insertLocked puts e in s's current generation, turning the generations
// over first when it has no room; s.mu is held and d is in neither map.
func (c *narInfoCache) insertLocked(s *narInfoShard, d store.PathDigest, e narInfoEntry) {
	if s.curBytes+e.bytes() > c.genMax {
		c.size.Add(-s.oldBytes)
		s.old, s.oldBytes = s.cur, s.curBytes
		s.cur, s.curBytes = make(map[store.PathDigest]narInfoEntry), 0
	}
	s.cur[d] = e
	s.curBytes += e.bytes()
	c.size.Add(e.bytes())
}

// invalidate forgets d's narinfo, and keeps any read in progress from
// adding one rendered before the change: call it after the change is
// visible in the index.
func (c *narInfoCache) invalidate(d store.PathDigest) {
	c.epoch.Add(1)
	s := c.shard(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.removeLocked(s.cur, &s.curBytes, d)
	c.removeLocked(s.old, &s.oldBytes, d)
}

// removeLocked forgets d in one of s's generations, gen with its byte
// count genBytes, and returns the entry it held; s.mu is held.
func (c *narInfoCache) removeLocked(gen map[store.PathDigest]narInfoEntry, genBytes *int64, d store.PathDigest) (narInfoEntry, bool) {
	e, ok := gen[d]
	if !ok {
		return narInfoEntry{}, false
	}
	delete(gen, d)
	*genBytes -= e.bytes()
	c.size.Add(-e.bytes())
	return e, true
}
