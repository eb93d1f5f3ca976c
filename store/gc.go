package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// GCResult is what a garbage collection did, with the store paths it
// found live.
type GCResult struct {
	PathsLive uint64 `json:"pathsLive"`
	// Files is the kept files (logs, debug info, realisations) marked.
	Files uint64 `json:"filesLive"`
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
	r, err := cas.GC(ctx, opts)
	res.GCResult = r
	return res, err
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
