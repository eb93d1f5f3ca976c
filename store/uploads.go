package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// Pending uploads: a NAR put over HTTP waits for the narinfo that names
// it, which may reach another server sharing the same records (replicas
// on one PostgreSQL database). So the NAR's ingest result is recorded in
// the store, not only in the memory of the server that took the NAR.
//
//	'U' URL ("nar/<file>")          → pending upload record (JSON, see PendingUpload)
//	'V' NAR sha256 (32) ‖ URL       → empty: the uploads of a NAR hash
const (
	metaKindUpload       byte = 'U'
	metaKindUploadByHash byte = 'V'
)

// PendingUpload is a NAR put and not yet named by a narinfo: what its
// ingest gave, the put file's hash and size, and until when it waits.
type PendingUpload struct {
	URL       string            `json:"url"`
	Root      castore.Entry     `json:"root"`
	NARSize   uint64            `json:"narSize"`
	NARSha256 [sha256.Size]byte `json:"narSha256"`
	FileHash  [sha256.Size]byte `json:"fileHash"`
	FileSize  uint64            `json:"fileSize"`
	Expires   time.Time         `json:"expires"`
}

// PutPendingUpload records u, replacing the record of the same URL. The
// write is synced: the client learns of the upload when this returns, and
// may send its narinfo to another server.
func (x *Index) PutPendingUpload(ctx context.Context, u PendingUpload) error {
	v, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("store: pending upload %s: %w", u.URL, err)
	}
	records := []castore.MetaRecord{
		{Kind: metaKindUpload, Key: []byte(u.URL), Value: v},
		{Kind: metaKindUploadByHash, Key: append(bytes.Clone(u.NARSha256[:]), u.URL...), Value: []byte{}},
	}
	if old, err := x.pendingUpload(ctx, u.URL); err == nil && old.NARSha256 != u.NARSha256 {
		records = append(records, castore.MetaRecord{Kind: metaKindUploadByHash, Key: append(bytes.Clone(old.NARSha256[:]), old.URL...), Delete: true})
	}
	if err := x.meta.SetMeta(ctx, records...); err != nil {
		return fmt.Errorf("store: pending upload %s: %w", u.URL, err)
	}
	return x.meta.Sync(ctx)
}

// PendingUpload returns the live pending upload put at url, else one of
// NAR hash sum; ErrNotFound when there is none (or only expired ones).
func (x *Index) PendingUpload(ctx context.Context, url string, sum [sha256.Size]byte) (PendingUpload, error) {
	if u, err := x.pendingUpload(ctx, url); err == nil && time.Now().Before(u.Expires) {
		return u, nil
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return PendingUpload{}, err
	}
	u, err := x.pendingUploadOf(ctx, sum)
	if errors.Is(err, ErrNotFound) {
		return u, fmt.Errorf("%w: pending upload %s or of NAR hash %x", ErrNotFound, url, sum)
	}
	return u, err
}

// pendingUploadOf returns a live pending upload of NAR hash sum;
// ErrNotFound when there is none (or only expired ones).
func (x *Index) pendingUploadOf(ctx context.Context, sum [sha256.Size]byte) (PendingUpload, error) {
	now := time.Now()
	var found *PendingUpload
	errFound := errors.New("found")
	err := x.meta.ScanMeta(ctx, metaKindUploadByHash, sum[:], func(key, _ []byte) error {
		u, err := x.pendingUpload(ctx, string(key[sha256.Size:]))
		if err == nil && u.NARSha256 == sum && now.Before(u.Expires) {
			found = &u
			return errFound
		}
		return nil
	})
	if found != nil {
		return *found, nil
	}
	if err != nil {
		return PendingUpload{}, err
	}
	return PendingUpload{}, fmt.Errorf("%w: pending upload of NAR hash %x", ErrNotFound, sum)
}

func (x *Index) pendingUpload(ctx context.Context, url string) (PendingUpload, error) {
	var u PendingUpload
	v, err := x.meta.GetMeta(ctx, metaKindUpload, []byte(url))
	if errors.Is(err, castore.ErrNotFound) {
		return u, fmt.Errorf("%w: pending upload %s", ErrNotFound, url)
	}
	if err != nil {
		return u, fmt.Errorf("store: pending upload %s: %w", url, err)
	}
	if err := json.Unmarshal(v, &u); err != nil {
		return u, fmt.Errorf("%w: pending upload %s: %v", castore.ErrCorrupt, url, err)
	}
	return u, nil
}

// DeletePendingUpload forgets the pending upload at url, if its NAR hash
// is sum (a later put under the same URL stays).
func (x *Index) DeletePendingUpload(ctx context.Context, url string, sum [sha256.Size]byte) error {
	u, err := x.pendingUpload(ctx, url)
	if errors.Is(err, ErrNotFound) || err == nil && u.NARSha256 != sum {
		return nil
	}
	if err != nil {
		return err
	}
	err = x.meta.SetMeta(ctx,
		castore.MetaRecord{Kind: metaKindUpload, Key: []byte(url), Delete: true},
		castore.MetaRecord{Kind: metaKindUploadByHash, Key: append(bytes.Clone(sum[:]), url...), Delete: true})
	if err != nil {
		return fmt.Errorf("store: pending upload %s: %w", url, err)
	}
	return nil
}

// PrunePendingUploads deletes the pending uploads that expired before
// now and returns how many.
func (x *Index) PrunePendingUploads(ctx context.Context, now time.Time) (int, error) {
	var records []castore.MetaRecord
	err := x.meta.ScanMeta(ctx, metaKindUpload, nil, func(key, v []byte) error {
		var u PendingUpload
		if err := json.Unmarshal(v, &u); err == nil && now.Before(u.Expires) {
			return nil
		}
		records = append(records,
			castore.MetaRecord{Kind: metaKindUpload, Key: bytes.Clone(key), Delete: true},
			castore.MetaRecord{Kind: metaKindUploadByHash, Key: append(bytes.Clone(u.NARSha256[:]), key...), Delete: true})
		return nil
	})
	if err != nil || len(records) == 0 {
		return 0, err
	}
	return len(records) / 2, x.meta.SetMeta(ctx, records...)
}
