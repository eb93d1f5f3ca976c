// Package lrudir keeps a bounded set of named files in a directory, least
// recently used out first: the bookkeeping the local disk caches of
// nixcas share (objectcache's copies of remote frames, pebblestore's
// decoded frames). It knows nothing of what the files hold.
//
// Layout: DIR/NA/NAME, NA the first two characters of NAME. A file is
// written to a temporary name beside its place (CreateTemp) and renamed
// into place by Keep, so a crash leaves whole files or temporary ones,
// which Open removes. Open rebuilds the index from the directory, oldest
// modification time evicted first, and evicts down to the limit. Nothing
// is synced: the files are derived data, and a file lost in a crash is
// made again by its cache.
//
// A Dir renames, indexes and removes files only under its mutex, so an
// eviction never removes a newer file of the same name. It is safe for
// concurrent use.
package lrudir
