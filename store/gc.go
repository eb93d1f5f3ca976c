package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// GCResult is what a garbage collection did, with the store paths it
// found live.
type GCResult struct {
	PathsLive uint64 `json:"pathsLive"`
	// Files is the kept files (logs, debug info, realisations) marked.
	Files uint64 `json:"filesLive"`
	// NARFilesDeleted counts the names of uploaded NAR files (see
	// PutNARFile) dropped, or, in a dry run, that would be: those whose
	// NAR no path has any more and no pending upload holds.
	NARFilesDeleted uint64 `json:"narFilesDeleted"`
	pebblestore.GCResult
}

// GC collects the garbage of cas, the castore under x: everything no
// PathInfo and no kept file (log, debug info, realisation) reaches, and
// nothing used within opts.Grace (see pebblestore.Store.GC, which says
// how marking keeps its memory bounded and why it is safe while uploads
// run). opts.Roots is set here: it waits for the Puts in progress when
// the collection's epoch starts, so that a path is either listed live or
// checked, and so marked, during the epoch. A live path whose tree is incomplete
// fails the collection before anything is deleted, naming the path.
func (x *Index) GC(ctx context.Context, cas *pebblestore.Store, opts pebblestore.GCOptions) (GCResult, error) {
	var res GCResult
	opts.Roots = func(ctx context.Context, yield func(string, castore.Entry) error) error {
		// The collection's epoch has started: a Put checking its tree
		// from now on marks it as it checks (castore's uses). Wait for
		// the Puts that checked before, so that the list has them.
		x.putGate.Lock()
		x.putGate.Unlock()
		err := x.List(ctx, func(p *PathInfo) error {
			res.PathsLive++
			return yield(p.Path, p.Root)
		})
		if err != nil {
			return err
		}
		return x.scanFiles(ctx, func(name string, blob castore.Digest, size uint64) error {
			res.Files++
			return yield(name, castore.Entry{Kind: castore.KindFile, Digest: blob, Size: size})
		})
	}
	// The names of NAR files are pruned inside the collection, so that a
	// Close of the store meanwhile waits for them too.
	after := opts.After
	opts.After = func(ctx context.Context) error {
		if after != nil {
			if err := after(ctx); err != nil {
				return err
			}
		}
		var err error
		res.NARFilesDeleted, err = x.pruneNARFiles(ctx, opts.DryRun)
		return err
	}
	r, err := cas.GC(ctx, opts)
	res.GCResult = r
	return res, err
}

// narFilesPerBatch bounds the records one write of pruneNARFiles deletes.
const narFilesPerBatch = 1024

// pruneNARFiles deletes (unless dryRun) the records of uploaded NAR file
// names whose NAR no path has (its paths were deleted or expired) and no
// pending upload holds, and returns how many. A name Nix uploads is
// recorded when its narinfo is put, while the NAR's pending upload is
// still recorded, and that is dropped only after the path is: so a name
// is checked against the pending uploads first, then against the NAR
// hashes of paths. The names found dead are checked again, a batch at a
// time, right before they are deleted, holding putGate: no path is put
// meanwhile, so a name recorded again since the first check is kept.
func (x *Index) pruneNARFiles(ctx context.Context, dryRun bool) (uint64, error) {
	var all []narFileName
	err := x.meta.ScanMeta(ctx, KindNARFile, nil, func(key, v []byte) error {
		f, err := decodeNARFileName(key, v)
		if err == nil {
			all = append(all, f)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: uploaded NAR files: %w", err)
	}
	dead, err := x.deadNARFiles(ctx, all)
	if err != nil || dryRun {
		return uint64(len(dead)), err
	}
	var deleted uint64
	for batch := range slices.Chunk(dead, narFilesPerBatch) {
		n, err := x.deleteDeadNARFiles(ctx, batch)
		deleted += n
		if err != nil {
			return deleted, err
		}
	}
	if deleted == 0 {
		return 0, nil
	}
	return deleted, x.meta.Sync(ctx)
}

// narFileName is a record of an uploaded NAR file name (see PutNARFile).
type narFileName struct {
	url []byte
	sum [sha256.Size]byte
}

func decodeNARFileName(key, v []byte) (narFileName, error) {
	if len(v) <= sha256.Size {
		return narFileName{}, fmt.Errorf("%w: NAR file record of %s has %d bytes", castore.ErrCorrupt, key, len(v))
	}
	f := narFileName{url: bytes.Clone(key)}
	copy(f.sum[:], v)
	return f, nil
}

// deadNARFiles returns those of names whose NAR is not live (narLive).
func (x *Index) deadNARFiles(ctx context.Context, names []narFileName) ([]narFileName, error) {
	var dead []narFileName
	for _, f := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		live, err := x.narLive(ctx, f.sum)
		if err != nil {
			return nil, err
		}
		if !live {
			dead = append(dead, f)
		}
	}
	return dead, nil
}

// deleteDeadNARFiles deletes those of names that still name the same NAR
// and are still dead, holding putGate, and returns how many.
func (x *Index) deleteDeadNARFiles(ctx context.Context, names []narFileName) (uint64, error) {
	x.putGate.Lock()
	defer x.putGate.Unlock()
	var still []narFileName
	for _, f := range names {
		v, err := x.meta.GetMeta(ctx, KindNARFile, f.url)
		if errors.Is(err, castore.ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if now, err := decodeNARFileName(f.url, v); err != nil || now.sum != f.sum {
			continue // named anew since, or corrupt: left as it is
		}
		still = append(still, f)
	}
	dead, err := x.deadNARFiles(ctx, still)
	if err != nil || len(dead) == 0 {
		return 0, err
	}
	records := make([]castore.MetaRecord, len(dead))
	for i, f := range dead {
		records[i] = castore.MetaRecord{Kind: KindNARFile, Key: f.url, Delete: true}
	}
	if err := x.meta.SetMeta(ctx, records...); err != nil {
		return 0, fmt.Errorf("store: uploaded NAR files: %w", err)
	}
	return uint64(len(dead)), nil
}

// narLive reports whether a pending upload holds the NAR of hash sum, or
// a path has it.
func (x *Index) narLive(ctx context.Context, sum [sha256.Size]byte) (bool, error) {
	if _, err := x.pendingUploadOf(ctx, sum); err == nil {
		return true, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	_, err := x.meta.GetMeta(ctx, KindNARHash, sum[:])
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, castore.ErrNotFound):
		return false, nil
	}
	return false, err
}

// scanFiles calls fn with the name ("<kind>/<name>"), blob and size of
// every kept file.
func (x *Index) scanFiles(ctx context.Context, fn func(name string, blob castore.Digest, size uint64) error) error {
	return x.meta.ScanMeta(ctx, metaKindFile, nil, func(key, v []byte) error {
		var r fileRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("%w: stored file %s: %v", castore.ErrCorrupt, key, err)
		}
		var d castore.Digest
		if b, err := hex.DecodeString(r.Blob); err != nil || len(b) != len(d) {
			return fmt.Errorf("%w: stored file %s: blob digest %q", castore.ErrCorrupt, key, r.Blob)
		} else {
			copy(d[:], b)
		}
		return fn(string(key), d, r.Size)
	})
}
