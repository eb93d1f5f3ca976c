package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
)

// Garbage collection
//
// GC frees what no live tree reaches: directories, blob indexes and chunk
// index entries, then the frames whose chunks are mostly dead. It runs in
// four steps, while reads and writes go on (see gcuse.go for why writes
// are safe):
//
//  1. Mark. The digests of every directory, blob and chunk reachable from
//     the live roots (the caller's: store paths and kept files), from the
//     use records of the grace period, and from every use while the
//     collection runs, go into a mark set: a temporary Pebble database in
//     DATA/gc-marks, never a map in memory (markSet). Marking holds the
//     directory walk's stack and one blob index at a time.
//  2. Sweep directories and blob indexes, then chunks: the store's keys
//     of each kind and the mark set's are both read in digest order and
//     merge-joined; a key not marked is re-checked (a chunk under its
//     lock stripe, a directory or blob index under the gate: see
//     deleteUnmarked) and deleted, with the store's counters, in batches
//     of gcBatch.
//  3. Frames. Each frame's live share is its chunks that the chunk index
//     still points at, in decoded bytes, over its decoded size. A frame
//     with none is unregistered (one synced batch) and deleted; one below
//     RewriteBelow has its live chunks written into new frames, switched
//     to in synced batches, and is then retired the same way (the
//     compaction machinery); the rest keep their dead bytes, reported.
//  4. On a shared database, frame objects no record names that are older
//     than StrayAge are deleted (gcStrayFrames).
//  5. Use records older than the grace period are deleted.
//
// A crash at any point leaves every live tree whole: deletions only remove
// what is unreachable, a new frame is synced before chunks switch to it,
// and a frame is unregistered before its object is deleted (the next
// writable open deletes objects no record names; on a shared database,
// step 4 of a later collection). The mark set a crash
// leaves is removed by the next collection. Memory is bounded by the mark
// set's (markSetMemory), the frame cache of a rewrite and one frame's
// chunk list at a time, whatever the number of chunks.

// GCOptions tune GC.
type GCOptions struct {
	// Roots calls yield with every live tree (its name, for errors, and
	// its root entry) and stops at yield's first error. Required.
	Roots func(ctx context.Context, yield func(name string, root castore.Entry) error) error
	// Grace: what was used (written or deduplicated against) less than
	// this long before the collection started is kept, as recorded by
	// stores opened with Options.RecordUses.
	Grace time.Duration
	// RewriteBelow: frames whose live share is below this are rewritten;
	// 0 only deletes frames with no live chunk. In [0, 1].
	RewriteBelow float64
	// Level is the zstd level of the frames a rewrite writes (cold
	// frames, which the next compaction folds in with the others).
	Level zstd.EncoderLevel
	// DryRun marks and counts what would be freed, and changes nothing in
	// the store (the mark set is still written under the data directory).
	DryRun bool
	// StrayAge: on a shared database, frame objects that no registry
	// record names and that were last written longer ago than this are
	// deleted (strays: see gcStrayFrames); 0 is DefaultGCOptions.StrayAge.
	StrayAge time.Duration
	// Progress, when set, is called with the step ("marking",
	// "sweeping", "rewriting"), the work done and the work in all (0 when
	// not known).
	Progress func(step string, done, total int64)
	// After, when set, runs once the collection has done its work
	// (dry run or not), before GC returns and with the store still held:
	// a Close waits for it as for the rest. Its error is GC's.
	After func(ctx context.Context) error
}

// DefaultGCOptions: one hour of grace, frames less than half live
// rewritten at zstd's default level, strays deleted once a day old (see
// gcStrayFrames for why a day).
var DefaultGCOptions = GCOptions{
	Grace:        time.Hour,
	RewriteBelow: 0.5,
	Level:        zstd.SpeedDefault,
	StrayAge:     24 * time.Hour,
}

// GCResult says what GC freed (or would free, on a dry run).
type GCResult struct {
	DryRun bool `json:"dryRun"`
	// Roots live trees were marked; UseRecords use records of the grace
	// period were taken as roots too.
	Roots      int `json:"roots"`
	UseRecords int `json:"useRecords"`
	// Directories, blob indexes and chunk index entries deleted.
	DirectoriesDeleted uint64 `json:"directoriesDeleted"`
	BlobsDeleted       uint64 `json:"blobsDeleted"`
	ChunksDeleted      uint64 `json:"chunksDeleted"`
	// ChunkBytesFreed is the uncompressed size of the chunks deleted.
	ChunkBytesFreed uint64 `json:"chunkBytesFreed"`
	// StoredBytesFreed is the fall of Stats.StoredBytes (frames and
	// unpacked chunks); on a dry run, the unpacked chunks and the frames
	// that would be deleted or rewritten, before what a rewrite writes.
	StoredBytesFreed int64 `json:"storedBytesFreed"`
	// FramesDeleted frames had no live chunk; FramesRewritten had a live
	// share below RewriteBelow and were rewritten into FramesWritten new
	// frames of StoredBytesWritten bytes.
	FramesDeleted      int    `json:"framesDeleted"`
	FramesRewritten    int    `json:"framesRewritten"`
	FramesWritten      int    `json:"framesWritten"`
	StoredBytesWritten uint64 `json:"storedBytesWritten"`
	// DeadBytesLeft is the decoded size of the dead chunks left in
	// FramesWithDeadBytes frames above the threshold.
	DeadBytesLeft       uint64 `json:"deadBytesLeft"`
	FramesWithDeadBytes int    `json:"framesWithDeadBytes"`
	// StrayFramesDeleted objects of StrayBytesFreed bytes were frames no
	// record named (on a shared database; see GCOptions.StrayAge).
	StrayFramesDeleted int     `json:"strayFramesDeleted"`
	StrayBytesFreed    int64   `json:"strayBytesFreed"`
	Seconds            float64 `json:"seconds"`
}

// ErrGCRunning: a collection is already running on the store.
var ErrGCRunning = errors.New("castore: gc: a garbage collection is already running")

// gcUseMargin is how long a use record may take from its time stamp to
// its commit: a collection on a shared database reads again, before each
// deletion batch, the records stamped from the previous reading less this
// margin (and not before the grace period).
const gcUseMargin = time.Minute

// gcBatch is how many candidates a sweep deletes in one batch.
const gcBatch = 1024

// GC collects garbage (see above). One collection runs at a time on a
// store: a second call meanwhile fails with ErrGCRunning. A dry run works
// on a read-only store.
func (s *Store) GC(ctx context.Context, opts GCOptions) (res GCResult, err error) {
	res = GCResult{DryRun: opts.DryRun}
	start := time.Now()
	switch {
	case opts.Roots == nil:
		return res, fmt.Errorf("%w: gc: no roots", castore.ErrInvalid)
	case opts.RewriteBelow < 0 || opts.RewriteBelow > 1:
		return res, fmt.Errorf("%w: gc: rewrite threshold %g not in [0, 1]", castore.ErrInvalid, opts.RewriteBelow)
	case opts.Grace < 0:
		return res, fmt.Errorf("%w: gc: negative grace period %s", castore.ErrInvalid, opts.Grace)
	case opts.StrayAge < 0:
		return res, fmt.Errorf("%w: gc: negative stray frame age %s", castore.ErrInvalid, opts.StrayAge)
	}
	if opts.StrayAge == 0 {
		opts.StrayAge = DefaultGCOptions.StrayAge
	}
	if opts.Level == 0 {
		opts.Level = DefaultGCOptions.Level
	}
	if opts.Progress == nil {
		opts.Progress = func(string, int64, int64) {}
	}
	if !s.gcRunning.TryLock() {
		return res, ErrGCRunning
	}
	defer s.gcRunning.Unlock()
	db, err := s.acquireFor(ctx, opts.DryRun)
	if err != nil {
		return res, err
	}
	defer s.mu.RUnlock()
	if !opts.DryRun {
		// One collection at a time across the processes that share the
		// database.
		_, unlock, err := db.gcLock(ctx, false)
		if err != nil {
			return res, err
		}
		defer unlock()
	}
	if db.shared() {
		// A newer binary's process may have raised the layout since
		// this store opened: its records are not this binary's to
		// collect.
		if err := s.recheckLayout(ctx, db); err != nil {
			return res, err
		}
	}
	// On a shared database, the use records are read again before each
	// deletion batch (deleteUnmarked), from those of the grace period on.
	s.gcCutoff, s.gcRescan = start.Add(-opts.Grace), start
	before, err := s.statsOf(ctx, db)
	if err != nil {
		return res, err
	}

	// A real collection has the store to itself (the open is
	// exclusive): it removes what crashed collections left. Dry runs,
	// which may run side by side on a read-only store, each have a mark
	// set of their own.
	markDir := filepath.Join(s.dir, "gc-marks")
	if opts.DryRun {
		if markDir, err = os.MkdirTemp(s.dir, "gc-marks-dry-"); err != nil {
			return res, fmt.Errorf("castore: gc: %w", err)
		}
	} else {
		left, _ := filepath.Glob(filepath.Join(s.dir, "gc-marks-dry-*"))
		for _, d := range left {
			if err = os.RemoveAll(d); err != nil {
				return res, fmt.Errorf("castore: gc: removing an old mark set: %w", err)
			}
		}
	}
	m, err := openMarkSet(markDir)
	if err != nil {
		return res, err
	}
	if !opts.DryRun {
		// The epoch starts before the use records are read (gcuse.go).
		s.gcMarks.Store(m)
	}
	defer func() {
		s.endGCEpoch()
		if cerr := m.close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	cutoff := start.Add(-opts.Grace)
	if err = s.gcMark(ctx, db, m, cutoff, opts, &res); err != nil {
		return res, err
	}
	if err = s.gcSweep(ctx, db, m, opts, &res, before); err != nil {
		return res, err
	}
	if !opts.DryRun {
		if err = syncLog(ctx, db); err != nil {
			return res, err
		}
	}
	var frameMarks *markSet
	if opts.DryRun {
		frameMarks = m
	}
	if err = s.gcFrames(ctx, db, frameMarks, opts, &res); err != nil {
		return res, err
	}
	if db.shared() {
		if err = s.gcStrayFrames(ctx, db, start.Add(-opts.StrayAge), opts.DryRun, &res); err != nil {
			return res, err
		}
	}
	if !opts.DryRun {
		if err = s.pruneUses(ctx, db, cutoff); err != nil {
			return res, err
		}
		if err = syncLog(ctx, db); err != nil {
			return res, err
		}
		after, serr := s.statsOf(ctx, db)
		if serr != nil {
			return res, serr
		}
		res.StoredBytesFreed = int64(before.StoredBytes) - int64(after.StoredBytes)
	}
	if opts.After != nil {
		if err = opts.After(ctx); err != nil {
			return res, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// syncLog is Sync on an acquired db (Sync would take s.mu again, which
// waits behind a Close that waits for the collection).
func syncLog(ctx context.Context, db kvDB) error {
	if err := db.sync(ctx); err != nil {
		return fmt.Errorf("castore: gc: %w", err)
	}
	return nil
}

// endGCEpoch stops recording uses into the mark set and waits until no
// use holds it.
func (s *Store) endGCEpoch() {
	s.gcMarks.Store(nil)
	s.gcGate.Lock()
	s.gcGate.Unlock()
	for i := range s.stripes {
		s.stripes[i].Lock()
		s.stripes[i].Unlock()
	}
}

// statsOf is Stats on an acquired db.
func (s *Store) statsOf(ctx context.Context, db kvDB) (castore.Stats, error) {
	c, err := db.counters(ctx)
	if err != nil {
		return castore.Stats{}, err
	}
	return castore.Stats{
		LogicalBytes: c[counterLogicalBytes], UniqueChunkBytes: c[counterUniqueChunkBytes],
		StoredBytes: c[counterStoredBytes], Chunks: c[counterChunks], Blobs: c[counterBlobs],
		Directories: c[counterDirectories], Frames: c[counterFrames],
	}, nil
}

// gcMark marks what the use records from cutoff on and the live roots
// reach.
func (s *Store) gcMark(ctx context.Context, db kvDB, m *markSet, cutoff time.Time, opts GCOptions, res *GCResult) error {
	mb := m.newBatch()
	defer mb.b.Close()
	w := &gcMarker{ctx: ctx, s: s, db: db, mb: mb}
	n, err := w.markUses(cutoff)
	res.UseRecords += n
	if err != nil {
		return fmt.Errorf("castore: gc: marking what was used since %s: %w", cutoff.Format(time.RFC3339), err)
	}
	err = opts.Roots(ctx, func(name string, root castore.Entry) error {
		if err := w.markTree(ctx, root, false); err != nil {
			return fmt.Errorf("castore: gc: marking %s: %w", name, err)
		}
		res.Roots++
		opts.Progress("marking", int64(res.Roots), 0)
		return nil
	})
	if err != nil {
		return err
	}
	return mb.close()
}

// markRecent marks what the use records from since on reach, into m at
// once: a collection on a shared database calls it before each deletion
// batch, holding the uses lock, for the uses of other processes since
// marking (see gcuse.go).
func (s *Store) markRecent(ctx context.Context, db kvDB, m *markSet, since time.Time) error {
	mb := m.newBatch()
	defer mb.b.Close()
	w := &gcMarker{ctx: ctx, s: s, db: db, mb: mb}
	if _, err := w.markUses(since); err != nil {
		return fmt.Errorf("castore: gc: marking what was used since %s: %w", since.Format(time.RFC3339), err)
	}
	if err := mb.close(); err != nil {
		return err
	}
	m.added.Add(1)
	return nil
}

// markUses marks what the use records from since on reach and returns how
// many it read. A missing item was used and never stored, or deleted
// before it was used again.
func (w *gcMarker) markUses(since time.Time) (n int, err error) {
	ctx, mb := w.ctx, w.mb
	lower := useKey(since, 0, castore.Digest{})[:9]
	it, err := w.db.newIter(ctx, lower, []byte{pebbleKindUse + 1})
	if err != nil {
		return 0, err
	}
	for it.First(); it.Valid() && err == nil; it.Next() {
		k := it.Key()
		if len(k) != 1+8+1+castore.DigestSize {
			err = fmt.Errorf("%w: use record key of %d bytes", castore.ErrCorrupt, len(k))
			break
		}
		var d castore.Digest
		copy(d[:], k[10:])
		n++
		switch k[9] {
		case pebbleKindChunk:
			err = mb.add(pebbleKindChunk, d)
		case pebbleKindBlobIndex:
			err = w.markBlob(d, 0, true)
		case pebbleKindDirectory:
			err = w.markTree(ctx, castore.Entry{Kind: castore.KindDirectory, Digest: d}, true)
		default:
			err = fmt.Errorf("%w: use record of kind %q", castore.ErrCorrupt, k[9])
		}
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return n, err
}

// gcMarker walks trees into a mark batch.
type gcMarker struct {
	ctx context.Context
	s   *Store
	db  kvDB
	mb  *markBatch
}

// markTree marks the tree at root, walking with an explicit stack;
// lenient skips what is missing rather than failing.
func (w *gcMarker) markTree(ctx context.Context, root castore.Entry, lenient bool) error {
	stack := []castore.Entry{root}
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch e.Kind {
		case castore.KindFile:
			if err := w.markBlob(e.Digest, e.Size, lenient); err != nil {
				return err
			}
		case castore.KindDirectory:
			if ok, err := w.mb.has(pebbleKindDirectory, e.Digest); err != nil || ok {
				if err != nil {
					return err
				}
				continue
			}
			dir, err := w.s.getDirectory(w.ctx, w.db, e.Digest)
			if lenient && errors.Is(err, castore.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("directory %s: %w", e.Digest, err)
			}
			if err := w.mb.add(pebbleKindDirectory, e.Digest); err != nil {
				return err
			}
			stack = append(stack, dir.Entries()...)
		}
	}
	return nil
}

// markBlob marks blob d and its chunks.
func (w *gcMarker) markBlob(d castore.Digest, size uint64, lenient bool) error {
	if ok, err := w.mb.has(pebbleKindBlobIndex, d); err != nil || ok {
		return err
	}
	refs, err := w.s.getBlobIndex(w.ctx, w.db, d)
	switch {
	case errors.Is(err, castore.ErrNotFound) && (lenient || size <= castore.MaxChunkSize):
		// A file of one chunk is its chunk (checked by the sweep's
		// merge: an unstored digest marks nothing stored).
		refs = []castore.ChunkRef{{Digest: d}}
	case err != nil:
		return fmt.Errorf("blob %s: %w", d, err)
	}
	for _, c := range refs {
		if err := w.mb.add(pebbleKindChunk, c.Digest); err != nil {
			return err
		}
	}
	return w.mb.add(pebbleKindBlobIndex, d)
}

// gcSweep deletes the directories, blob indexes and chunks not marked.
func (s *Store) gcSweep(ctx context.Context, db kvDB, m *markSet, opts GCOptions, res *GCResult, before castore.Stats) error {
	// Directories and blob indexes, holding the gate (see gcuse.go),
	// and on a shared database the uses lock too, having read the use
	// records again.
	if err := s.sweepTrees(ctx, db, m, opts, res); err != nil {
		return err
	}
	var scanned int64
	return s.sweepKind(ctx, db, m, pebbleKindChunk, opts.DryRun, true, res, func() {
		scanned++
		if scanned%4096 == 0 {
			opts.Progress("sweeping", scanned, int64(before.Chunks))
		}
	})
}

// sweepTrees sweeps directories and blob indexes, holding the gate and,
// on a shared database, the uses lock (after the gate, and with no lock
// stripe: see deleteUnmarked), having read the use records again.
func (s *Store) sweepTrees(ctx context.Context, db kvDB, m *markSet, opts GCOptions, res *GCResult) error {
	if !opts.DryRun {
		s.gcGate.Lock()
		defer s.gcGate.Unlock()
		if db.shared() {
			ldb, unlock, err := db.gcLock(ctx, true)
			if err != nil {
				return err
			}
			defer unlock()
			db = ldb
			if err := s.markRecent(ctx, db, m, s.gcCutoff); err != nil {
				return err
			}
			s.gcRescan = time.Now()
		}
	}
	if err := s.sweepKind(ctx, db, m, pebbleKindDirectory, opts.DryRun, false, res, nil); err != nil {
		return err
	}
	return s.sweepKind(ctx, db, m, pebbleKindBlobIndex, opts.DryRun, false, res, nil)
}

// sweepKind merge-joins the store's keys of kind with the mark set's and
// deletes (or, on a dry run, counts) the ones not marked, gcBatch at a
// time; gate: take the gate for each batch.
func (s *Store) sweepKind(ctx context.Context, db kvDB, m *markSet, kind byte, dryRun, gate bool, res *GCResult, tick func()) error {
	bounds := &pebble.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}}
	it, err := db.newIter(ctx, bounds.LowerBound, bounds.UpperBound)
	if err != nil {
		return fmt.Errorf("castore: gc: sweep: %w", err)
	}
	defer it.Close()
	// Uses add marks after the iterator is made; while none has, the
	// iterator's view is the whole set. (Read before the iterator is
	// made: a use counts after it marks.)
	seen := m.added.Load()
	mit, err := m.db.NewIter(bounds)
	if err != nil {
		return fmt.Errorf("castore: gc: mark set: %w", err)
	}
	defer mit.Close()
	var batch []castore.Digest
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.deleteUnmarked(ctx, db, m, kind, batch, dryRun, gate, seen, res)
		batch = batch[:0]
		return err
	}
	marked := mit.First()
	for ok := it.First(); ok; ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if tick != nil {
			tick()
		}
		k := it.Key()
		if len(k) != 1+castore.DigestSize {
			return fmt.Errorf("%w: key %c of %d bytes", castore.ErrCorrupt, kind, len(k))
		}
		for marked && bytes.Compare(mit.Key(), k) < 0 {
			marked = mit.Next()
		}
		if marked && bytes.Equal(mit.Key(), k) {
			continue
		}
		var d castore.Digest
		copy(d[:], k[1:])
		if batch = append(batch, d); len(batch) == gcBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return pebbleError(err, "gc: sweep")
	}
	if err := mit.Error(); err != nil {
		return fmt.Errorf("castore: gc: mark set: %w", err)
	}
	return flush()
}

// deleteUnmarked deletes the items of ds that are still not marked, with
// their counters, in one batch (counts them on a dry run); gate: take the
// gate and the items' lock stripes for the batch (chunks).
//
// Directories and blob indexes are swept without their stripes: their
// uses mark them holding the gate for reading, which sweepTrees holds for
// writing throughout. There it also holds the uses lock of a shared
// database, and waiting for a stripe would close a cycle PostgreSQL
// cannot see: a writer holds its chunk's stripe while its commit waits in
// the group (pggroup.go) behind a use record waiting for the uses lock in
// shared mode.
func (s *Store) deleteUnmarked(ctx context.Context, db kvDB, m *markSet, kind byte, ds []castore.Digest, dryRun, gate bool, seen int64, res *GCResult) error {
	recheck := false
	if !dryRun && gate {
		s.gcGate.Lock()
		defer s.gcGate.Unlock()
		unlock := s.lockStripes(slices.Values(ds))
		defer unlock()
	}
	if !dryRun && db.shared() && gate {
		// Other processes' uses since marking: their records, read
		// holding the uses lock (see gcuse.go). Taken after the locks
		// of this process: uses waiting for it hold connections of the
		// pool, which a writer holding those locks may need. (The
		// sweep of directories and blob indexes holds it throughout.)
		ldb, unlock, err := db.gcLock(ctx, true)
		if err != nil {
			return err
		}
		defer unlock()
		db = ldb
		since := s.gcRescan.Add(-gcUseMargin)
		if since.Before(s.gcCutoff) {
			since = s.gcCutoff
		}
		s.gcRescan = time.Now()
		if err := s.markRecent(ctx, db, m, since); err != nil {
			return err
		}
	}
	if !dryRun {
		// A use marks under the stripe (or the gate) and counts after:
		// a use of one of ds before now has moved the count.
		recheck = m.added.Load() != seen
	}
	var delta [numCounters]uint64
	b := db.newBatch()
	defer b.close()
	for _, d := range ds {
		if recheck {
			if ok, err := m.has(kind, d); err != nil {
				return err
			} else if ok {
				continue
			}
		}
		key := pebbleKey(kind, d)
		err := b.get(ctx, key, func(v []byte) error {
			switch kind {
			case pebbleKindChunk:
				size, err := storedChunkSize(v)
				if err != nil {
					return fmt.Errorf("chunk %s: %w", d, err)
				}
				inline := 0
				if len(v) > 0 && v[0] != CodecFrame {
					inline = len(v)
				}
				delta[counterUniqueChunkBytes] -= uint64(size)
				delta[counterStoredBytes] -= uint64(inline)
				delta[counterChunks]--
				res.ChunksDeleted++
				res.ChunkBytesFreed += uint64(size)
				if dryRun {
					res.StoredBytesFreed += int64(inline)
				}
			case pebbleKindBlobIndex:
				delta[counterBlobs]--
				res.BlobsDeleted++
			case pebbleKindDirectory:
				delta[counterDirectories]--
				res.DirectoriesDeleted++
			}
			return nil
		})
		if errors.Is(err, errNoKey) {
			continue
		}
		if err != nil {
			return err
		}
		b.delete(key)
	}
	if dryRun || b.empty() {
		return nil
	}
	b.addCounters(delta[:])
	if err := b.commit(ctx, false); err != nil {
		return pebbleError(err, "gc: delete")
	}
	if kind == pebbleKindChunk {
		s.places.reset()
	}
	return nil
}

// gcRewriteCache bounds the decoded source frames a rewrite keeps.
const gcRewriteCache = 16 << 20

// gcFrameGroup bounds what one rewrite holds: the live chunks of the
// frames it rewrites, in decoded bytes.
const gcFrameGroup = 64 << 20

// gcFrames retires the frames with no live chunk and rewrites those below
// the threshold. marks, on a dry run, says which chunks would stay.
func (s *Store) gcFrames(ctx context.Context, db kvDB, marks *markSet, opts GCOptions, res *GCResult) error {
	dry := marks != nil
	if !dry {
		// The packer and compactions wait, as for a compaction.
		s.packMu.Lock()
		defer s.packMu.Unlock()
	}
	var (
		dead, sparse []*frameInfo
		plan         []*compactChunk
		planned      int64
		rewritten    int64
	)
	process := func() error {
		if dry {
			dead, sparse, plan, planned = dead[:0], sparse[:0], plan[:0], 0
			return nil
		}
		if len(plan) > 0 {
			var cres CompactResult
			for _, c := range plan {
				cres.DecodedBytes += uint64(c.size)
			}
			// The plan takes each frame's chunks together: a small cache
			// of decoded source frames does.
			copts := CompactOptions{FrameSize: DefaultCompactOptions.FrameSize, Level: opts.Level, CacheSize: gcRewriteCache,
				Progress: func(done, _ int64) { opts.Progress("rewriting", rewritten+done, 0) }}
			if err := s.writeColdFrames(ctx, db, plan, copts, &cres); err != nil {
				return err
			}
			rewritten += planned
			res.FramesWritten += cres.FramesOut
			res.StoredBytesWritten += cres.StoredOut
		}
		// retireFrames deletes the frames no chunk points at any more:
		// the dead ones, and the sparse ones whose chunks all moved.
		n, err := s.retireFrames(ctx, db, dead)
		if err != nil {
			return err
		}
		res.FramesDeleted += n
		if n, err = s.retireFrames(ctx, db, sparse); err != nil {
			return err
		}
		res.FramesRewritten += n
		dead, sparse, plan, planned = dead[:0], sparse[:0], plan[:0], 0
		return nil
	}
	err := scanFrames(ctx, db, func(f *frameInfo) error {
		var live uint64
		var chunks []*compactChunk
		seen := make(map[castore.Digest]bool, len(f.chunks))
		for _, c := range f.chunks {
			if seen[c.digest] {
				continue
			}
			seen[c.digest] = true
			var cc *compactChunk
			err := get(ctx, db, pebbleKey(pebbleKindChunk, c.digest), "chunk", func(v []byte) error {
				if len(v) == 0 || v[0] != CodecFrame {
					return nil
				}
				r, err := decodeFrameRef(v)
				if err != nil {
					return fmt.Errorf("chunk %s: %w", c.digest, err)
				}
				if r.frame == f.name {
					cc = &compactChunk{digest: c.digest, value: bytes.Clone(v), size: int(r.length), framed: true, ref: r}
				}
				return nil
			})
			if err != nil && !errors.Is(err, errNoKey) {
				return err
			}
			if cc != nil && dry {
				if ok, err := marks.has(pebbleKindChunk, c.digest); err != nil {
					return err
				} else if !ok {
					cc = nil
				}
			}
			if cc != nil {
				live += uint64(cc.size)
				chunks = append(chunks, cc)
			}
		}
		switch {
		case live == 0:
			dead = append(dead, f)
			if dry {
				res.FramesDeleted++
				res.StoredBytesFreed += int64(f.stored)
			}
		case f.decoded > 0 && float64(live)/float64(f.decoded) < opts.RewriteBelow:
			sparse = append(sparse, f)
			plan = append(plan, chunks...)
			planned += int64(live)
			if dry {
				res.FramesRewritten++
				res.StoredBytesFreed += int64(f.stored)
			}
		case f.decoded > live:
			res.DeadBytesLeft += f.decoded - live
			res.FramesWithDeadBytes++
		}
		if planned >= gcFrameGroup || len(dead)+len(sparse) >= 4096 {
			return process()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return process()
}

// Stray frames on a shared database
//
// A frame object that no registry record names is a stray: its process
// stopped between putting it and the batch that registers it (packer,
// compaction, rewrite, import), or between unregistering a frame and
// deleting it (retireFrames). A store of one process deletes its strays
// when it opens (sweepFrames). On a shared database it cannot: another
// process may be, right now, between its put and its registration. So a
// collection deletes only strays last written before the cutoff, which
// StrayAge puts far beyond that gap: a put and its registration are
// seconds apart, a minute or so with the object store retrying; the
// default (DefaultGCOptions.StrayAge) is a day, so that a process stopped (paused
// VM, SIGSTOP) for hours or a clock of the object store some minutes off
// keeps its frames, while a stray costs a day of its bytes. Putting an
// object again, as a packer does repacking the same queued chunks, writes
// it anew: its age starts again.
//
// Each page of old objects is looked up in the registry in one read of
// which records exist (hasMany: the records themselves are not read);
// each one named by no record has its time asked again (a put since the
// listing makes it young) and is then deleted. What remains is a put of
// the same bytes (the same name) by another process between that last
// look and the delete, one round trip: the window retireFrames has too.

// gcStrayFrames deletes (on a dry run, counts) the frame objects last
// written before cutoff that no registry record names. An object store
// that cannot tell the objects' ages (not an ObjectTimer) keeps them all.
func (s *Store) gcStrayFrames(ctx context.Context, db kvDB, cutoff time.Time, dry bool, res *GCResult) error {
	timer, ok := objectsAs[ObjectTimer](s.objects)
	if !ok {
		return nil
	}
	type stray struct {
		name string
		size int64
	}
	var (
		page []stray
		keys [][]byte
	)
	sweep := func() error {
		registered := make([]bool, len(page))
		err := db.hasMany(ctx, keys, func(i int) error {
			registered[i] = true
			return nil
		})
		if err != nil {
			return fmt.Errorf("castore: gc: stray frames: %w", err)
		}
		for i, o := range page {
			if registered[i] {
				continue
			}
			if !dry {
				written, err := timer.ObjectTime(ctx, o.name)
				if errors.Is(err, castore.ErrNotFound) || err == nil && !written.Before(cutoff) {
					continue // deleted, or put again, meanwhile
				}
				if err != nil {
					return fmt.Errorf("castore: gc: stray frames: %w", err)
				}
				if err := s.objects.DeleteObject(ctx, o.name); err != nil {
					return fmt.Errorf("castore: gc: stray frame %s: %w", o.name, err)
				}
			}
			res.StrayFramesDeleted++
			res.StrayBytesFreed += o.size
		}
		page, keys = page[:0], keys[:0]
		return nil
	}
	err := timer.ListObjectTimes(ctx, func(name string, size int64, written time.Time) error {
		d, ok := parseFrameName(name)
		if !ok || !written.Before(cutoff) {
			return nil
		}
		page = append(page, stray{name, size})
		keys = append(keys, pebbleKey(pebbleKindFrame, d))
		if len(page) == pgGetPage {
			return sweep()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("castore: gc: stray frames: %w", err)
	}
	return sweep()
}

// pruneUses deletes the use records from before cutoff.
func (s *Store) pruneUses(ctx context.Context, db kvDB, cutoff time.Time) error {
	upper := useKey(cutoff, 0, castore.Digest{})[:9]
	if err := db.deleteRange(ctx, []byte{pebbleKindUse}, upper); err != nil {
		return fmt.Errorf("castore: gc: prune use records: %w", err)
	}
	return nil
}

// Recount counts what the store holds afresh, by reading every chunk
// index entry, blob index, directory and frame record, for checking the
// counters Stats keeps: Chunks, UniqueChunkBytes, Blobs, Directories,
// Frames, and StoredBytes (unpacked chunk values plus the frames'
// registered sizes). LogicalBytes counts repeats, which no scan can see:
// it is taken from the counters.
func (s *Store) Recount(ctx context.Context) (castore.Stats, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return castore.Stats{}, err
	}
	defer s.mu.RUnlock()
	kept, err := s.statsOf(ctx, db)
	if err != nil {
		return castore.Stats{}, err
	}
	st := castore.Stats{LogicalBytes: kept.LogicalBytes}
	for _, kind := range []byte{pebbleKindChunk, pebbleKindBlobIndex, pebbleKindDirectory} {
		it, err := db.newIter(ctx, []byte{kind}, []byte{kind + 1})
		if err != nil {
			return castore.Stats{}, pebbleError(err, "recount")
		}
		for it.First(); it.Valid() && err == nil; it.Next() {
			switch kind {
			case pebbleKindChunk:
				var v []byte
				if v, err = it.ValueAndErr(); err != nil {
					break
				}
				var size int
				if size, err = storedChunkSize(v); err != nil {
					break
				}
				st.Chunks++
				st.UniqueChunkBytes += uint64(size)
				if len(v) > 0 && v[0] != CodecFrame {
					st.StoredBytes += uint64(len(v))
				}
			case pebbleKindBlobIndex:
				st.Blobs++
			case pebbleKindDirectory:
				st.Directories++
			}
		}
		if cerr := it.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return castore.Stats{}, fmt.Errorf("castore: recount: %w", err)
		}
	}
	err = scanFrames(ctx, db, func(f *frameInfo) error {
		st.Frames++
		st.StoredBytes += f.stored
		return nil
	})
	return st, err
}

// PutPhantomChunks records chunk index entries for refs pointing into
// frame at offset 0, with their counters, in batches, without storing
// any bytes: frame need not exist, and reading such a chunk fails. It is
// for benchmarks of what works on the index alone (marking and sweeping a
// store of many millions of chunks); a chunk already recorded is
// overwritten and counted again.
func (s *Store) PutPhantomChunks(ctx context.Context, frame castore.Digest, refs []castore.ChunkRef) error {
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	b := db.newBatch()
	defer b.close()
	var delta [numCounters]uint64
	var v []byte
	for _, r := range refs {
		v = frameRef{frame: frame, length: r.Size}.encode(v[:0])
		b.set(pebbleKey(pebbleKindChunk, r.Digest), v)
		delta[counterChunks]++
		delta[counterUniqueChunkBytes] += uint64(r.Size)
	}
	b.addCounters(delta[:])
	if err := b.commit(ctx, false); err != nil {
		return pebbleError(err, "put phantom chunks")
	}
	return nil
}
