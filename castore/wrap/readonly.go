package wrap

import (
	"context"
	"errors"
	"fmt"

	"github.com/nixcas/nixcas/castore"
)

// ErrReadOnly is wrapped by the errors of writes to a ReadOnly store.
var ErrReadOnly = errors.New("castore: read-only store")

// ReadOnly returns a castore.Store reading from s whose writes fail with
// an error wrapping ErrReadOnly and change nothing. The powers that change
// what is stored (castore.EncodedChunkStore's PutEncodedChunk,
// castore.ChunkDeleter, SetMeta) are refused too; the others are found
// below it with castore.As. Stats and Sync are those of s when it has
// them (zero and nothing otherwise). Close closes nothing: whoever opened
// s closes it.
func ReadOnly(s castore.ReadStore) castore.Store { return readOnly{s} }

type readOnly struct{ r castore.ReadStore }

var (
	_ castore.EncodedChunkStore = readOnly{}
	_ castore.ChunkDeleter      = readOnly{}
)

func (o readOnly) Unwrap() any { return o.r }

func (o readOnly) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	return o.r.HasChunk(ctx, d)
}

func (o readOnly) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	return o.r.GetChunk(ctx, d, dst)
}

func (o readOnly) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	return o.r.GetBlobIndex(ctx, d)
}

func (o readOnly) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	return o.r.GetDirectory(ctx, d)
}

func (o readOnly) PutChunk(_ context.Context, c castore.Chunk) (bool, error) {
	return false, fmt.Errorf("%w: put chunk %s", ErrReadOnly, c.Digest())
}

func (o readOnly) PutBlob(_ context.Context, d castore.Digest, _ uint64, _ []castore.ChunkRef) error {
	return fmt.Errorf("%w: put blob %s", ErrReadOnly, d)
}

func (o readOnly) PutDirectory(_ context.Context, _ *castore.Directory) (castore.Digest, error) {
	return castore.Digest{}, fmt.Errorf("%w: put directory", ErrReadOnly)
}

func (o readOnly) GetEncodedChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	return castore.GetEncoded(ctx, o.r, d, dst)
}

func (o readOnly) PutEncodedChunk(_ context.Context, d castore.Digest, _ []byte) (bool, error) {
	return false, fmt.Errorf("%w: put chunk %s", ErrReadOnly, d)
}

func (o readOnly) DeleteChunk(_ context.Context, d castore.Digest) (bool, error) {
	return false, fmt.Errorf("%w: delete chunk %s", ErrReadOnly, d)
}

// GetMeta, SetMeta and ScanMeta make a ReadOnly store a read-only
// store.MetaStore when s is one.
func (o readOnly) GetMeta(ctx context.Context, kind byte, key []byte) ([]byte, error) {
	m, ok := castore.As[metaReader](o.r)
	if !ok {
		return nil, fmt.Errorf("%w: the store keeps no records of kind %q", castore.ErrNotFound, kind)
	}
	return m.GetMeta(ctx, kind, key)
}

func (o readOnly) ScanMeta(ctx context.Context, kind byte, prefix []byte, fn func(key, value []byte) error) error {
	m, ok := castore.As[metaReader](o.r)
	if !ok {
		return nil
	}
	return m.ScanMeta(ctx, kind, prefix, fn)
}

func (o readOnly) SetMeta(context.Context, ...castore.MetaRecord) error {
	return fmt.Errorf("%w: set records", ErrReadOnly)
}

// metaReader is the read side of a store of records (store.MetaStore).
type metaReader interface {
	GetMeta(ctx context.Context, kind byte, key []byte) ([]byte, error)
	ScanMeta(ctx context.Context, kind byte, prefix []byte, fn func(key, value []byte) error) error
}

func (o readOnly) Stats(ctx context.Context) (castore.Stats, error) {
	if s, ok := castore.As[castore.Stater](o.r); ok {
		return s.Stats(ctx)
	}
	return castore.Stats{}, nil
}

// Sync syncs s when it can: a read-only store has written nothing, but
// what it reads may have been.
func (o readOnly) Sync(ctx context.Context) error {
	if s, ok := castore.As[castore.Syncer](o.r); ok {
		return s.Sync(ctx)
	}
	return nil
}

func (o readOnly) Close() error { return nil }
