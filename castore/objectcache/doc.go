// Package objectcache keeps a bounded copy of the objects a store read
// from a remote pebblestore.ObjectStore (S3) in a local directory: a
// read-through, least-recently-used cache that is itself an ObjectStore
// wrapping the remote one.
//
// Objects are frames, immutable and named by the hex BLAKE3 of their
// bytes, so a cached copy never goes stale: only DeleteObject drops one.
// A read that misses fetches the whole object once, however many readers
// miss it at the same time, checks its bytes against its name, and only
// then keeps it, so a truncated or damaged download is never served or
// cached; a copy read back whole is checked again, and a damaged one is
// dropped and fetched anew. Objects whose names are not 64 hex digits
// (not digests) pass through uncached.
//
// Layout: DIR/NA/NAME, as DirObjects. Writes go to a temporary file that
// is renamed into place, so a crash leaves whole objects or temporary
// files, which Open removes. Open rebuilds the index from the directory,
// oldest modification time evicted first, and evicts down to the limit.
// The cache is not synced: a copy lost in a crash is fetched again.
//
// Puts, deletes and listings go to the remote store; a put does not fill
// the cache (the frames a replica writes are not those it will read).
//
// A Cache counts hits, misses and evictions for Prometheus: it is a
// prometheus.Collector.
package objectcache
