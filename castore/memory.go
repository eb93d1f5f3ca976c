package castore

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemoryStore keeps everything in maps. Its zero value is ready to use; it
// is safe for concurrent use. Chunks are kept in their stored (encoded)
// form, so its Stats match a persistent store's.
type MemoryStore struct {
	mu          sync.RWMutex
	chunks      map[Digest][]byte
	indexes     map[Digest][]ChunkRef
	directories map[Digest][]byte
	stats       Stats
}

var (
	_ Store        = (*MemoryStore)(nil)
	_ ChunkDeleter = (*MemoryStore)(nil)
	_ ChunkScanner = (*MemoryStore)(nil)
)

// HasChunk implements ChunkStore.
func (m *MemoryStore) HasChunk(_ context.Context, d Digest) (bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.chunks[d]
	return ok, nil
}

// GetChunk implements ChunkStore.
func (m *MemoryStore) GetChunk(_ context.Context, d Digest, dst []byte) ([]byte, error) {
	m.mu.RLock()
	stored, ok := m.chunks[d]
	m.mu.RUnlock()
	if !ok {
		return dst, fmt.Errorf("%w: chunk %s", ErrNotFound, d)
	}
	return DecodeChunk(dst, stored)
}

// PutChunk implements ChunkStore.
func (m *MemoryStore) PutChunk(_ context.Context, c Chunk) (bool, error) {
	if err := c.Check(); err != nil {
		return false, err
	}
	m.mu.RLock()
	_, ok := m.chunks[c.digest]
	m.mu.RUnlock()
	if ok {
		return false, nil
	}
	var enc ChunkEncoder
	return m.putStored(c.digest, len(c.data), enc.Encode(nil, c.data)), nil
}

// putStored keeps a chunk's stored form, which m then owns, unless the
// chunk is already there, reporting whether it was added.
func (m *MemoryStore) putStored(d Digest, size int, stored []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.chunks[d]; ok {
		return false
	}
	if m.chunks == nil {
		m.chunks = make(map[Digest][]byte)
	}
	m.chunks[d] = stored
	m.stats.Chunks++
	m.stats.UniqueChunkBytes += uint64(size)
	m.stats.StoredBytes += uint64(len(stored))
	return true
}

// GetBlobIndex implements BlobIndexStore.
func (m *MemoryStore) GetBlobIndex(_ context.Context, d Digest) ([]ChunkRef, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	idx, ok := m.indexes[d]
	if !ok {
		return nil, fmt.Errorf("%w: blob index %s", ErrNotFound, d)
	}
	return slices.Clone(idx), nil
}

// PutBlob implements BlobIndexStore.
func (m *MemoryStore) PutBlob(_ context.Context, d Digest, size uint64, chunks []ChunkRef) error {
	if err := CheckBlobIndex(d, size, chunks); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stats.LogicalBytes += size
	if len(chunks) < 2 {
		return nil
	}
	if _, ok := m.indexes[d]; ok {
		return nil
	}
	if m.indexes == nil {
		m.indexes = make(map[Digest][]ChunkRef)
	}
	m.indexes[d] = slices.Clone(chunks)
	m.stats.Blobs++
	return nil
}

// GetDirectory implements DirectoryStore.
func (m *MemoryStore) GetDirectory(_ context.Context, d Digest) (*Directory, error) {
	m.mu.RLock()
	b, ok := m.directories[d]
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: directory %s", ErrNotFound, d)
	}
	return DecodeStoredDirectory(d, b)
}

// PutDirectory implements DirectoryStore.
func (m *MemoryStore) PutDirectory(_ context.Context, dir *Directory) (Digest, error) {
	if err := dir.Validate(); err != nil {
		return Digest{}, err
	}
	b := dir.Marshal()
	d := Hash(b)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.directories[d]; !ok {
		if m.directories == nil {
			m.directories = make(map[Digest][]byte)
		}
		m.directories[d] = b
		m.stats.Directories++
	}
	return d, nil
}

// Stats implements Store.
func (m *MemoryStore) Stats(context.Context) (Stats, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.stats, nil
}

// Sync implements Store; memory has nothing to sync.
func (m *MemoryStore) Sync(context.Context) error { return nil }

// Close implements Store. The data stays readable.
func (m *MemoryStore) Close() error { return nil }

// CheckBlobIndex checks what PutBlob is given: the chunk sizes add up to
// the blob's size, and a one-chunk blob is its chunk. Every backend calls
// it in PutBlob; a failure wraps ErrInvalid.
func CheckBlobIndex(d Digest, size uint64, chunks []ChunkRef) error {
	var sum uint64
	for _, c := range chunks {
		sum += uint64(c.Size)
	}
	switch {
	case len(chunks) > 0 && sum != size:
		return fmt.Errorf("%w: blob %s of %d bytes: chunks add up to %d", ErrInvalid, d, size, sum)
	case len(chunks) == 1 && chunks[0].Digest != d:
		return fmt.Errorf("%w: blob %s of one chunk has chunk digest %s", ErrInvalid, d, chunks[0].Digest)
	}
	return nil
}

// DecodeStoredDirectory decodes a directory read back from a store, checking
// it against the digest it was stored under: the GetDirectory of every
// backend goes through it.
func DecodeStoredDirectory(d Digest, b []byte) (*Directory, error) {
	if got := Hash(b); got != d {
		return nil, fmt.Errorf("%w: directory %s: stored bytes hash to %s", ErrCorrupt, d, got)
	}
	dir, err := UnmarshalDirectory(b)
	if err != nil {
		return nil, fmt.Errorf("directory %s: %w", d, err)
	}
	if err := dir.Validate(); err != nil {
		return nil, fmt.Errorf("%w: directory %s: %v", ErrCorrupt, d, err)
	}
	return dir, nil
}

// DeleteChunk implements ChunkDeleter.
func (m *MemoryStore) DeleteChunk(_ context.Context, d Digest) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	stored, ok := m.chunks[d]
	if !ok {
		return false, nil
	}
	size, err := DecodedChunkSize(stored)
	if err != nil {
		return false, fmt.Errorf("chunk %s: %w", d, err)
	}
	delete(m.chunks, d)
	m.stats.Chunks--
	m.stats.UniqueChunkBytes -= uint64(size)
	m.stats.StoredBytes -= uint64(len(stored))
	return true, nil
}

// ScanChunks implements ChunkScanner. It lists the chunks stored when it
// starts.
func (m *MemoryStore) ScanChunks(ctx context.Context, fn func(d Digest, size int) error) error {
	type item struct {
		d    Digest
		size int
	}
	m.mu.RLock()
	items := make([]item, 0, len(m.chunks))
	var err error
	for d, stored := range m.chunks {
		size, serr := DecodedChunkSize(stored)
		if serr != nil {
			err = fmt.Errorf("chunk %s: %w", d, serr)
			break
		}
		items = append(items, item{d, size})
	}
	m.mu.RUnlock()
	if err != nil {
		return err
	}
	slices.SortFunc(items, func(a, b item) int { return bytes.Compare(a.d[:], b.d[:]) })
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(it.d, it.size); err != nil {
			return err
		}
	}
	return nil
}
