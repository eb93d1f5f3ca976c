package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// Copying a whole store
//
// CopyStore moves a store from one database and object store to another
// (an embedded Pebble store to PostgreSQL and S3, or back). It works on
// the records themselves, below the store's logic, so that everything is
// carried over as it is: every key kind, the layers' records included.
//
// The order makes an interrupted copy safe to run again:
//
//  1. The target's copy marker ('m' "copy") is written, synced, before
//     anything else; a target holding it is an incomplete copy, which
//     opens only with Options.CopyTarget (CheckComplete says why).
//  2. Every frame the source's registry names is copied (verified by its
//     BLAKE3 name), skipping one the target's object store already has
//     with the same size; the objects are synced.
//  3. Every record is copied in key order, in batches, with set (so a
//     second run overwrites what a first one wrote). The counters are not
//     copied as records; queue entries ('q') are renumbered from the
//     target's own sequence, since the target's sequence (PostgreSQL's,
//     say) knows nothing of the source's numbers.
//  4. One last batch adds the source's counters and deletes the marker,
//     synced: the target then looks complete, and only then is.
//
// A run on a target that holds the marker resumes: it deletes the queue
// entries a previous run wrote, then does steps 2 to 4 again, skipping the
// frames already there. Counters are added only in step 4, so they are
// never counted twice.

// copyMarkerKey marks a store that a copy is writing.
var copyMarkerKey = []byte{pebbleKindMeta, 'c', 'o', 'p', 'y'}

// CopyOptions tune CopyStore. Zero fields take defaults.
type CopyOptions struct {
	// BatchBytes bounds the records of one write batch (default 4 MiB).
	BatchBytes int
	// Parallel is how many frames are copied at once (default 8).
	Parallel int
	// Progress, if set, is called after each frame copied or skipped
	// (stage "frames", n frames and their bytes so far, of total bytes)
	// and after each batch of records (stage "records", n records and
	// their bytes so far, total -1: unknown). It may be called from
	// several goroutines at once.
	Progress func(stage string, n, bytes, total int64)
}

// CopyResult counts what CopyStore did.
type CopyResult struct {
	// Resumed: the target held the marker of an interrupted copy.
	Resumed bool `json:"resumed"`
	// Frames were copied, FramesSkipped already in the target with the
	// same size; FrameBytes is the size of those copied.
	Frames        int64 `json:"frames"`
	FramesSkipped int64 `json:"framesSkipped"`
	FrameBytes    int64 `json:"frameBytes"`
	// Records were written (counters and layout version excluded), with
	// RecordBytes of keys and values.
	Records     int64 `json:"records"`
	RecordBytes int64 `json:"recordBytes"`
}

// CopyStore copies every frame and record of src into dst, which must be
// new (nothing in it but its layout version) or the target of an
// interrupted copy, which it resumes. src is only read; nothing may write
// to src or dst meanwhile (open dst with FrameOptions.Off, so that its
// packer does not pack the queued chunks being copied). When it returns
// without error dst has the records, the frames and the Stats of src,
// synced.
func CopyStore(ctx context.Context, dst, src *Store, opts CopyOptions) (CopyResult, error) {
	var res CopyResult
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 4 << 20
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	if opts.Progress == nil {
		opts.Progress = func(string, int64, int64, int64) {}
	}
	sdb, err := src.acquire(ctx)
	if err != nil {
		return res, err
	}
	defer src.mu.RUnlock()
	ddb, err := dst.acquireWrite(ctx)
	if err != nil {
		return res, err
	}
	defer dst.mu.RUnlock()

	if ok, err := has(ctx, sdb, copyMarkerKey); err != nil {
		return res, fmt.Errorf("castore: copy: source: %w", err)
	} else if ok {
		return res, fmt.Errorf("%w: castore: copy: the source %s is itself an incomplete copy", castore.ErrInvalid, src.dir)
	}
	if res.Resumed, err = checkCopyTarget(ctx, ddb, dst.dir); err != nil {
		return res, err
	}
	counters, err := sdb.counters(ctx)
	if err != nil {
		return res, fmt.Errorf("castore: copy: source counters: %w", err)
	}
	if err := ddb.set(ctx, copyMarkerKey, []byte(src.dir), true); err != nil {
		return res, fmt.Errorf("castore: copy: marking the target: %w", err)
	}
	queue := []byte{pebbleKindQueue}
	if err := ddb.deleteRange(ctx, queue, prefixEnd(queue)); err != nil {
		return res, fmt.Errorf("castore: copy: clearing the target's queue: %w", err)
	}
	if err := copyFrames(ctx, dst, src, sdb, opts, &res); err != nil {
		return res, err
	}
	if err := copyRecords(ctx, ddb, sdb, dst, opts, &res); err != nil {
		return res, err
	}
	b := ddb.newBatch()
	defer b.close()
	b.addCounters(counters[:])
	b.delete(copyMarkerKey)
	if err := b.commit(ctx, true); err != nil {
		return res, fmt.Errorf("castore: copy: completing the target: %w", err)
	}
	return res, nil
}

// checkCopyTarget refuses a target that holds anything but its layout
// version, unless it holds the copy marker too (resumed).
func checkCopyTarget(ctx context.Context, db kvDB, dir string) (resumed bool, err error) {
	if resumed, err = has(ctx, db, copyMarkerKey); err != nil || resumed {
		return resumed, err
	}
	it, err := db.newIter(ctx, nil, nil)
	if err != nil {
		return false, fmt.Errorf("castore: copy: target: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if bytes.Equal(k, pebbleVersionKey) || bytes.Equal(k, pebbleCountersKey) {
			continue
		}
		return false, fmt.Errorf("%w: castore: copy: the target %s is not empty (it holds a record %c/%x): copy only into a new store",
			castore.ErrInvalid, dir, k[0], k[1:])
	}
	if err := it.Error(); err != nil {
		return false, fmt.Errorf("castore: copy: target: %w", err)
	}
	c, err := db.counters(ctx)
	if err != nil {
		return false, fmt.Errorf("castore: copy: target counters: %w", err)
	}
	if c != ([numCounters]uint64{}) {
		return false, fmt.Errorf("%w: castore: copy: the target %s is not empty (its counters are not zero)", castore.ErrInvalid, dir)
	}
	return false, nil
}

// copyFrames copies the frames of src's registry into dst's object store.
func copyFrames(ctx context.Context, dst, src *Store, sdb kvDB, opts CopyOptions, res *CopyResult) error {
	type frame struct {
		name castore.Digest
		size int64
	}
	var frames []frame
	err := scanFrames(ctx, sdb, func(f *frameInfo) error {
		frames = append(frames, frame{f.name, int64(f.stored)})
		return nil
	})
	if err != nil {
		return fmt.Errorf("castore: copy: source frame registry: %w", err)
	}
	have := make(map[string]int64)
	err = dst.objects.ListObjects(ctx, func(name string, size int64) error {
		have[name] = size
		return nil
	})
	if err != nil {
		return fmt.Errorf("castore: copy: listing the target's objects: %w", err)
	}
	var total int64
	for _, f := range frames {
		total += f.size
	}
	var done, doneBytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Parallel)
	for _, f := range frames {
		name := frameName(f.name)
		if size, ok := have[name]; ok && size == f.size {
			res.FramesSkipped++
			opts.Progress("frames", done.Add(1), doneBytes.Add(f.size), total)
			continue
		}
		g.Go(func() error {
			obj, err := src.objects.GetObject(gctx, name, 0, -1, nil)
			if err != nil {
				return fmt.Errorf("castore: copy: reading frame %s: %w", name, err)
			}
			if int64(len(obj)) != f.size || castore.Hash(obj) != f.name {
				return fmt.Errorf("%w: castore: copy: frame %s of the source: %d bytes that do not hash to its name (registry: %d bytes)",
					castore.ErrCorrupt, name, len(obj), f.size)
			}
			if err := dst.objects.PutObject(gctx, name, obj); err != nil {
				return fmt.Errorf("castore: copy: writing frame %s: %w", name, err)
			}
			opts.Progress("frames", done.Add(1), doneBytes.Add(f.size), total)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	res.Frames = int64(len(frames)) - res.FramesSkipped
	for _, f := range frames {
		if size, ok := have[frameName(f.name)]; !ok || size != f.size {
			res.FrameBytes += f.size
		}
	}
	if err := dst.objects.SyncObjects(ctx); err != nil {
		return fmt.Errorf("castore: copy: syncing the target's objects: %w", err)
	}
	return nil
}

// copyRecords copies every record of sdb but the counters, the layout
// version and the copy marker into ddb, in key order, renumbering queue
// entries.
func copyRecords(ctx context.Context, ddb, sdb kvDB, dst *Store, opts CopyOptions, res *CopyResult) error {
	// The target takes the source's version first if it is higher: the
	// version key sorts after the frame and chunk records that may need it.
	version, _, err := readLayoutVersion(ctx, sdb.get, sdb)
	if err != nil {
		return fmt.Errorf("castore: copy: %w", err)
	}
	if version > layoutFrames {
		if err := requireLayout(ctx, ddb, version); err != nil {
			return fmt.Errorf("castore: copy: %w", err)
		}
	}
	it, err := sdb.newIter(ctx, nil, nil)
	if err != nil {
		return fmt.Errorf("castore: copy: reading the source's records: %w", err)
	}
	defer it.Close()
	b := ddb.newBatch()
	defer func() { b.close() }()
	flush := func() error {
		if b.empty() {
			return nil
		}
		if err := dst.space.admit(b.size()); err != nil {
			return fmt.Errorf("castore: copy: %w", err)
		}
		if err := b.commit(ctx, false); err != nil {
			return fmt.Errorf("castore: copy: writing records: %w", err)
		}
		b.close()
		b = ddb.newBatch()
		opts.Progress("records", res.Records, res.RecordBytes, -1)
		return nil
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if bytes.Equal(k, pebbleCountersKey) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("castore: copy: reading record %c/%x: %w", k[0], k[1:], err)
		}
		if bytes.Equal(k, pebbleVersionKey) {
			continue // raised above
		}
		if k[0] == pebbleKindQueue {
			seq, err := ddb.nextSeq(ctx)
			if err != nil {
				return fmt.Errorf("castore: copy: %w", err)
			}
			k = queueKey(seq)
		}
		b.set(k, v) // a batch copies what it is given (kvDB)
		res.Records++
		res.RecordBytes += int64(len(k) + len(v))
		if b.size() >= opts.BatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("castore: copy: reading the source's records: %w", err)
	}
	if err := flush(); err != nil {
		return err
	}
	if err := ddb.sync(ctx); err != nil {
		return fmt.Errorf("castore: copy: syncing records: %w", err)
	}
	return nil
}

// errCopyIncomplete is the error of opening an incomplete copy.
var errCopyIncomplete = errors.New("castore: the store is an incomplete copy")

// CheckComplete returns an error wrapping castore.ErrInvalid when s is an
// incomplete copy (see CopyStore), which only Options.CopyTarget opens.
func (s *Store) CheckComplete(ctx context.Context) error {
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	return checkComplete(ctx, db, s.dir)
}

func checkComplete(ctx context.Context, db kvDB, dir string) error {
	incomplete, err := has(ctx, db, copyMarkerKey)
	if err != nil {
		return err
	}
	if incomplete {
		return fmt.Errorf("%w: %w: %s: a copy into it was interrupted; run the same `nixcas store copy` again to finish it",
			castore.ErrInvalid, errCopyIncomplete, dir)
	}
	return nil
}
