package httpcache

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/nixcas/nixcas/internal/twogen"
	"github.com/nixcas/nixcas/store"
)

// narInfoCache keeps rendered narinfos in memory, by store path digest,
// so that a narinfo served again costs no index read, PathInfo decoding
// or text rendering. It holds at most max bytes (text plus a fixed
// overhead per entry) in a two-generation cache (internal/twogen): the
// entries dropped are those not used for the longest (roughly).
//
// A path changed (put or deleted) in this process is forgotten by
// invalidate, which the index calls (store.Index.OnChange). A narinfo
// rendered from a read that began before a change must not be kept after
// it: every change moves epoch first, and add keeps an entry only if the
// epoch is still the one its read began in (checked under the lock of
// the entry's shard, which invalidate takes after moving the epoch).
// When other processes may change the index too, ttl bounds how long an
// entry is served (0: until it is invalidated or dropped).
type narInfoCache struct {
	ttl     time.Duration
	epoch   atomic.Uint64
	entries *twogen.Cache[store.PathDigest, narInfoEntry]
	now     func() time.Time
}

// narInfoEntryOverhead is counted for each entry besides its text: the
// key, the map slot, the slice header and the time.
const narInfoEntryOverhead = 80

type narInfoEntry struct {
	text  []byte
	added int64 // unix nanoseconds, for ttl
}

// newNarInfoCache returns a cache of at most max bytes whose entries are
// served for at most ttl (0: no limit).
func newNarInfoCache(max int64, ttl time.Duration) *narInfoCache {
	c := &narInfoCache{ttl: ttl, now: time.Now}
	var stale func(narInfoEntry) bool
	if ttl > 0 {
		stale = func(e narInfoEntry) bool { return c.now().UnixNano()-e.added >= int64(c.ttl) }
	}
	c.entries = twogen.New(max, narInfoShard, stale)
	return c
}

func narInfoShard(d store.PathDigest) uint32 { return binary.LittleEndian.Uint32(d[:4]) }

// get returns the cached narinfo of d, which the caller must not modify,
// or nil and the epoch to pass to add.
func (c *narInfoCache) get(d store.PathDigest) ([]byte, uint64) {
	// The epoch is read before the lookup: a change after it moves the
	// epoch, and add then keeps nothing.
	epoch := c.epoch.Load()
	e, _ := c.entries.Get(d)
	return e.text, epoch
}

// add keeps text as d's narinfo, unless the index changed since the
// epoch get returned (text may then be out of date), or text alone is
// larger than a generation. The cache owns text from then on.
func (c *narInfoCache) add(d store.PathDigest, text []byte, epoch uint64) {
	e := narInfoEntry{text: text}
	if c.ttl > 0 {
		e.added = c.now().UnixNano()
	}
	c.entries.Add(d, e, int64(len(text))+narInfoEntryOverhead, func() bool { return c.epoch.Load() == epoch })
}

// invalidate forgets d's narinfo, and keeps any read in progress from
// adding one rendered before the change: call it after the change is
// visible in the index.
func (c *narInfoCache) invalidate(d store.PathDigest) {
	c.epoch.Add(1)
	c.entries.Remove(d)
}
