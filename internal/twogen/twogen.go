package twogen

import "sync"

// Shards is the number of shards of every Cache.
const Shards = 16

// Cache is a bounded cache of values V by keys K (see the package doc).
// Values are handed out as they were added, shared by every caller: a
// caller that may modify one stores a copy. Safe for concurrent use.
type Cache[K comparable, V any] struct {
	genMax  int64 // bytes of one generation of one shard
	shardOf func(K) uint32
	stale   func(V) bool
	shards  [Shards]shard[K, V]
}

type shard[K comparable, V any] struct {
	mu                 sync.Mutex
	cur, old           map[K]entry[V]
	curBytes, oldBytes int64
	hits, misses       uint64
	// Makes a shard 128 bytes, so that two shards' locks and counters
	// share no cache line and look-ups in different shards do not slow
	// each other down.
	_ [72]byte
}

type entry[V any] struct {
	v    V
	size int64
}

// New returns a Cache of at most max bytes (0: it keeps nothing).
// shardOf hashes a key to pick its shard: its values should spread
// evenly (the first bytes of a digest do). stale, when not nil, is asked
// of each entry found: a stale entry is dropped and reported missing
// (an entry that has outlived a time to live, say).
func New[K comparable, V any](max int64, shardOf func(K) uint32, stale func(V) bool) *Cache[K, V] {
	c := &Cache[K, V]{genMax: max / Shards / 2, shardOf: shardOf, stale: stale}
	for i := range c.shards {
		c.shards[i].cur = make(map[K]entry[V])
	}
	return c
}

func (c *Cache[K, V]) shard(k K) *shard[K, V] {
	return &c.shards[c.shardOf(k)%Shards]
}

// Get returns the value kept under k, and whether there is one.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cur[k]
	if ok && c.stale != nil && c.stale(e.v) {
		s.remove(s.cur, &s.curBytes, k)
		ok = false
	} else if !ok {
		if e, ok = s.remove(s.old, &s.oldBytes, k); ok {
			if c.stale != nil && c.stale(e.v) {
				ok = false
			} else {
				c.insert(s, k, e)
			}
		}
	}
	if !ok {
		s.misses++
		var zero V
		return zero, false
	}
	s.hits++
	return e.v, true
}

// Add keeps v under k, counted as size bytes (at least one), replacing
// what k held. When v alone is larger than a generation's share of the
// bound, or keep, when not nil, returns false, k holds nothing after it.
// keep is called under the shard's lock, which Remove takes too: a
// caller that moves a version of its own before each Remove, and has
// keep compare it with the one it read before making v, never keeps a v
// made from data a Remove has since declared out of date.
func (c *Cache[K, V]) Add(k K, v V, size int64, keep func() bool) {
	size = max(size, 1) // an entry of no size would never turn a generation
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(s.cur, &s.curBytes, k)
	s.remove(s.old, &s.oldBytes, k)
	if size > c.genMax || (keep != nil && !keep()) {
		return
	}
	c.insert(s, k, entry[V]{v: v, size: size})
}

// Remove forgets what k held.
func (c *Cache[K, V]) Remove(k K) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(s.cur, &s.curBytes, k)
	s.remove(s.old, &s.oldBytes, k)
}

// Stats are a Cache's counters.
type Stats struct {
	Hits, Misses uint64 // look-ups that found a value, and not
	Bytes        int64  // held now, as the sizes given to Add count
	Entries      int    // held now
}

// Stats returns the cache's counters, summed over its shards.
func (c *Cache[K, V]) Stats() Stats {
	var st Stats
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Hits += s.hits
		st.Misses += s.misses
		st.Bytes += s.curBytes + s.oldBytes
		st.Entries += len(s.cur) + len(s.old)
		s.mu.Unlock()
	}
	return st
}

// insert puts e in s's current generation, turning the generations over
// first when it has no room; s.mu is held and k is in neither map.
func (c *Cache[K, V]) insert(s *shard[K, V], k K, e entry[V]) {
	if s.curBytes+e.size > c.genMax {
		s.old, s.oldBytes = s.cur, s.curBytes
		s.cur, s.curBytes = make(map[K]entry[V], len(s.old)), 0
	}
	s.cur[k] = e
	s.curBytes += e.size
}

// remove forgets k in gen, one of s's generations with its byte count
// genBytes, and returns the entry it held; s.mu is held.
func (s *shard[K, V]) remove(gen map[K]entry[V], genBytes *int64, k K) (entry[V], bool) {
	e, ok := gen[k]
	if !ok {
		return e, false
	}
	delete(gen, k)
	*genBytes -= e.size
	return e, true
}
