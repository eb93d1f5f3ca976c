package castore

import (
	"context"
	"encoding/binary"

	"github.com/nixcas/nixcas/internal/twogen"
)

// TreeCache is a ReadStore that keeps, in memory, the directories and
// blob indexes it read from the store it wraps, so that a tree read again
// (a NAR served again) costs no store look-up and no decoding for them.
// Chunks are read through, uncached.
//
// Both are named by their digests, so a kept entry is never stale: the
// store can only ever hold those very bytes under that digest. A
// directory or blob index deleted from the store (garbage collection)
// may still be served from memory until it falls out; its chunks are
// gone too, so a render of a deleted tree still fails, when it reads
// them, with the store's ErrNotFound. A tree that is still stored is
// never affected: nothing the store does to other trees, or to the
// places of chunks (compaction), changes a directory or a chunk list.
//
// Memory is bounded by max bytes (about the decoded size of what is
// kept), in the shards of a two-generation cache (internal/twogen): what
// was used since its shard last turned stays, at most max bytes are
// kept, and an entry larger than max/32 (a generation of one of the 16
// shards) is not kept. Look-ups of different entries rarely wait for
// each other.
//
// Directories it returns are shared by every caller that reads them:
// read them, never modify them (narrender only reads). Blob indexes are
// copied, as BlobIndexReader promises. It reads through every error;
// missing items are not remembered. Safe for concurrent use.
type TreeCache struct {
	s     ReadStore
	max   int64
	items *twogen.Cache[treeKey, treeItem]
}

var (
	_ ReadStore = (*TreeCache)(nil)
	_ Wrapper   = (*TreeCache)(nil)
)

// treeKey names a cached item: a directory and a blob may share a digest
// (a file holding a directory's encoding), so the kind is part of it.
type treeKey struct {
	dir bool
	d   Digest
}

type treeItem struct {
	dir    *Directory
	chunks []ChunkRef
}

func treeShard(k treeKey) uint32 { return binary.LittleEndian.Uint32(k.d[:4]) }

// NewTreeCache returns a TreeCache over s holding at most max bytes; with
// max 0 it keeps nothing and only reads through.
func NewTreeCache(s ReadStore, max int64) *TreeCache {
	return &TreeCache{s: s, max: max, items: twogen.New[treeKey, treeItem](max, treeShard, nil)}
}

// Unwrap implements Wrapper: the wrapped store's powers (ChunkFiler, ...)
// stay reachable with As.
func (c *TreeCache) Unwrap() any { return c.s }

// HasChunk implements ChunkReader by reading through.
func (c *TreeCache) HasChunk(ctx context.Context, d Digest) (bool, error) {
	return c.s.HasChunk(ctx, d)
}

// GetChunk implements ChunkReader by reading through.
func (c *TreeCache) GetChunk(ctx context.Context, d Digest, dst []byte) ([]byte, error) {
	return c.s.GetChunk(ctx, d, dst)
}

// GetDirectory implements DirectoryReader; the directory is shared (see
// TreeCache).
func (c *TreeCache) GetDirectory(ctx context.Context, d Digest) (*Directory, error) {
	k := treeKey{dir: true, d: d}
	if it, ok := c.lookup(k); ok {
		return it.dir, nil
	}
	dir, err := c.s.GetDirectory(ctx, d)
	if err != nil {
		return nil, err
	}
	c.add(k, treeItem{dir: dir}, directoryBytes(dir))
	return dir, nil
}

// GetBlobIndex implements BlobIndexReader; the caller owns the slice.
func (c *TreeCache) GetBlobIndex(ctx context.Context, d Digest) ([]ChunkRef, error) {
	k := treeKey{d: d}
	if it, ok := c.lookup(k); ok {
		return append([]ChunkRef(nil), it.chunks...), nil
	}
	chunks, err := c.s.GetBlobIndex(ctx, d)
	if err != nil {
		return nil, err
	}
	c.add(k, treeItem{chunks: append([]ChunkRef(nil), chunks...)}, blobIndexBytes(chunks))
	return chunks, nil
}

// TreeCacheStats are a TreeCache's counters.
type TreeCacheStats struct {
	Hits, Misses uint64 // look-ups answered from memory, and not
	Bytes        int64  // held now
	Entries      int    // held now
}

// Stats returns the cache's counters.
func (c *TreeCache) Stats() TreeCacheStats {
	st := c.items.Stats()
	return TreeCacheStats{Hits: st.Hits, Misses: st.Misses, Bytes: st.Bytes, Entries: st.Entries}
}

func (c *TreeCache) lookup(k treeKey) (treeItem, bool) {
	if c.max <= 0 {
		return treeItem{}, false
	}
	return c.items.Get(k)
}

func (c *TreeCache) add(k treeKey, it treeItem, bytes int64) {
	if c.max > 0 {
		c.items.Add(k, it, bytes, nil)
	}
}

// treeEntryOverhead is about what an entry costs beyond its name and
// target: the key and map slot, the Entry struct and its digest.
const treeEntryOverhead = 128

// directoryBytes is about the memory dir holds.
func directoryBytes(dir *Directory) int64 {
	n := int64(treeEntryOverhead)
	for _, e := range dir.Directories {
		n += int64(len(e.Name)) + treeEntryOverhead
	}
	for _, e := range dir.Files {
		n += int64(len(e.Name)) + treeEntryOverhead
	}
	for _, e := range dir.Symlinks {
		n += int64(len(e.Name)+len(e.Target)) + treeEntryOverhead
	}
	return n
}

// blobIndexBytes is about the memory a kept chunk list holds.
func blobIndexBytes(chunks []ChunkRef) int64 {
	return treeEntryOverhead + int64(len(chunks))*int64(len(Digest{})+8)
}
