package wrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// ReadThrough returns a store that reads from local and, for what local
// lacks, from remote, keeping a copy in local: a cache in front of a
// remote store (tvix's combinator, perkeep's cond/proxy). Every read
// tries local first; on castore.ErrNotFound it asks remote, and
//   - a chunk is verified against its digest (castore.VerifyChunk), put in
//     local and returned;
//   - a directory is checked against its digest, put in local and
//     returned;
//   - a blob index is returned, not kept: its chunks are not all read, so
//     it cannot be checked against the blob's digest here (whoever reads
//     the blob does that, as castore.OpenBlob does; a whole-tree fetch that
//     verifies lists stores them in local itself). A blob local holds as a
//     chunk is a blob of one chunk, which has no index: remote is not
//     asked.
//
// HasChunk answers from both. Writes, Stats and Sync are local's; Unwrap
// returns local, so local's powers (deleting chunks for eviction, packing)
// are found with castore.As. Close closes neither store: whoever opened
// them closes them. Safe for concurrent use when both stores are.
func ReadThrough(local castore.Store, remote castore.ReadStore) castore.Store {
	return readThrough{Store: local, remote: remote}
}

var _ castore.EncodedChunkStore = readThrough{}

type readThrough struct {
	castore.Store
	remote castore.ReadStore
}

func (r readThrough) Unwrap() any { return r.Store }

func (r readThrough) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	ok, err := r.Store.HasChunk(ctx, d)
	if err != nil || ok {
		return ok, err
	}
	return r.remote.HasChunk(ctx, d)
}

func (r readThrough) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := r.Store.GetChunk(ctx, d, dst)
	if !errors.Is(err, castore.ErrNotFound) {
		return out, err
	}
	out, err = r.remote.GetChunk(ctx, d, dst)
	if err != nil {
		return dst, err
	}
	c, err := castore.VerifyChunk(d, out[len(dst):])
	if err != nil {
		return dst, fmt.Errorf("read-through: remote: %w", err)
	}
	if _, err := r.Store.PutChunk(ctx, c); err != nil {
		return dst, fmt.Errorf("read-through: keeping chunk %s: %w", d, err)
	}
	return out, nil
}

func (r readThrough) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	refs, err := r.Store.GetBlobIndex(ctx, d)
	if !errors.Is(err, castore.ErrNotFound) {
		return refs, err
	}
	if ok, herr := r.Store.HasChunk(ctx, d); herr != nil {
		return nil, herr
	} else if ok {
		return nil, err
	}
	refs, rerr := r.remote.GetBlobIndex(ctx, d)
	if rerr != nil {
		return nil, rerr
	}
	if len(refs) < 2 {
		return nil, fmt.Errorf("%w: read-through: remote: blob index %s of %d chunks", castore.ErrCorrupt, d, len(refs))
	}
	return refs, nil
}

func (r readThrough) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	dir, err := r.Store.GetDirectory(ctx, d)
	if !errors.Is(err, castore.ErrNotFound) {
		return dir, err
	}
	if dir, err = r.remote.GetDirectory(ctx, d); err != nil {
		return nil, err
	}
	if got := dir.Digest(); got != d {
		return nil, fmt.Errorf("%w: read-through: remote sent directory %s for %s", castore.ErrCorrupt, got, d)
	}
	if _, err := r.Store.PutDirectory(ctx, dir); err != nil {
		return nil, fmt.Errorf("read-through: keeping directory %s: %w", d, err)
	}
	return dir, nil
}

// GetEncodedChunk implements castore.EncodedChunkStore: local's stored
// form, the chunk fetched through GetChunk first when local lacks it.
func (r readThrough) GetEncodedChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := castore.GetEncoded(ctx, r.Store, d, dst)
	if !errors.Is(err, castore.ErrNotFound) {
		return out, err
	}
	if _, err := r.GetChunk(ctx, d, nil); err != nil {
		return dst, err
	}
	return castore.GetEncoded(ctx, r.Store, d, dst)
}

// PutEncodedChunk implements castore.EncodedChunkStore: into local.
func (r readThrough) PutEncodedChunk(ctx context.Context, d castore.Digest, stored []byte) (bool, error) {
	return castore.PutEncoded(ctx, r.Store, d, stored)
}

// Close closes neither store.
func (r readThrough) Close() error { return nil }
