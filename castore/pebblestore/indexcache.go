package pebblestore

// IndexCacheStats describe Pebble's block cache: the memory that keeps
// the index's blocks (chunk index, directories, PathInfo) between reads.
// Chunk lookups stay in memory while it holds the chunk index; its hit
// rate says whether it does.
type IndexCacheStats struct {
	// Capacity is the most the cache holds (Options.CacheSize), in bytes.
	Capacity int64
	// Used is what it holds now, in bytes.
	Used int64
	// Hits and Misses count block reads since the store was opened.
	Hits, Misses int64
}

// IndexCacheStats returns the block cache's figures; ok is false for a
// store whose records are in PostgreSQL (it has no block cache) or that
// is closed.
func (s *Store) IndexCacheStats() (st IndexCacheStats, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, isPebble := s.db.(*pebbleKV)
	if !isPebble {
		return IndexCacheStats{}, false
	}
	m := p.db.Metrics()
	return IndexCacheStats{
		Capacity: p.cacheSize,
		Used:     m.BlockCache.Size,
		Hits:     m.BlockCache.Hits,
		Misses:   m.BlockCache.Misses,
	}, true
}
