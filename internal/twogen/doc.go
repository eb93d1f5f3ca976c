// Package twogen is a bounded in-memory cache of two generations, the
// mechanism behind nixcas's caches of decoded trees (castore.TreeCache)
// and of rendered narinfos (the HTTP handler's narinfo cache).
//
// A Cache is split into shards by a hash of the key, each with its own
// lock, so that concurrent look-ups of different keys rarely wait for
// each other. Each shard keeps its entries in two generations that take
// turns: an entry is added to the current one, an entry found in the
// previous one moves to the current one, and when the current one would
// pass its share of the bound the previous one is dropped and the
// current one becomes the previous. What was used since a shard's last
// turn stays; what was not used for longest goes first (roughly).
//
// The bound is in bytes, as the caller counts them for each entry: a
// Cache of max bytes gives each generation of each of its Shards shards
// max/Shards/2 bytes, so it never holds more than max, and an entry
// larger than one generation's share is not kept at all.
package twogen
