package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// CompactOptions tune Compact. Zero fields take the defaults of
// DefaultCompactOptions.
type CompactOptions struct {
	// Order lists chunks in the order to write them; the store layer
	// lists the versions of each file side by side, so that they compress
	// against each other. Chunks it does not list follow in the order of
	// their frames. Digests that are not stored, or not being compacted,
	// are skipped.
	Order []castore.Digest
	// OlderThan: hot frames written less than this long ago stay as they
	// are. Cold frames are always rewritten, so that new versions of a
	// file join the old ones.
	OlderThan time.Duration
	// FrameSize is the decoded size of a cold frame.
	FrameSize int
	// Level is the zstd level of cold frames.
	Level zstd.EncoderLevel
	// CacheSize bounds the decoded source frames kept while compacting.
	CacheSize int64
	// DryRun reports what would be rewritten and writes nothing.
	DryRun bool
	// Progress, when set, is called after each frame written with the
	// decoded bytes done and in all.
	Progress func(done, total int64)
	// DutyCycle, in (0, 1), throttles compaction to that share of the
	// time: after each frame it pauses as long as the frame took, times
	// (1/DutyCycle - 1). 0 means full speed.
	DutyCycle float64
}

// DefaultCompactOptions: 4 MiB cold frames at zstd's best level, 128 MiB
// of decoded source frames cached. (On four Go releases, 4 MiB frames
// grouped by path stored about a tenth less than 1 MiB ones.)
var DefaultCompactOptions = CompactOptions{
	FrameSize: 4 << 20,
	Level:     zstd.SpeedBestCompression,
	CacheSize: 128 << 20,
}

// CompactResult says what Compact rewrote.
type CompactResult struct {
	// FramesIn frames and InlineChunks chunks stored inline were read;
	// StoredIn is their stored size.
	FramesIn     int    `json:"framesIn"`
	InlineChunks int    `json:"inlineChunks"`
	StoredIn     uint64 `json:"storedBytesIn"`
	// Chunks chunks of DecodedBytes bytes were rewritten.
	Chunks       int    `json:"chunks"`
	DecodedBytes uint64 `json:"decodedBytes"`
	// FramesOut cold frames of StoredOut bytes were written (none on a
	// dry run).
	FramesOut int    `json:"framesOut"`
	StoredOut uint64 `json:"storedBytesOut"`
	// FramesDeleted source frames were deleted; a frame still holding a
	// chunk that was not rewritten stays.
	FramesDeleted int `json:"framesDeleted"`
}

// compactChunk is a chunk being compacted: its index value when planned
// and where its bytes are.
type compactChunk struct {
	digest castore.Digest
	value  []byte // the index value read when planning
	size   int
	framed bool
	ref    frameRef
}

// Compact rewrites chunks into cold frames in the order opts.Order gives:
// every chunk of the cold frames, of hot frames older than opts.OlderThan,
// and every chunk still stored inline (queued chunks are packed first).
// Each new frame is written and synced before the chunks are switched to
// it; the source frames are unregistered in one synced batch and deleted
// after that, so a crash at any point leaves every chunk readable (a frame
// left behind is deleted on the next open). Reads and writes go on
// meanwhile; the packer waits.
func (s *Store) Compact(ctx context.Context, opts CompactOptions) (CompactResult, error) {
	var res CompactResult
	if opts.FrameSize == 0 {
		opts.FrameSize = DefaultCompactOptions.FrameSize
	}
	if opts.Level == 0 {
		opts.Level = DefaultCompactOptions.Level
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCompactOptions.CacheSize
	}
	if opts.FrameSize < 64<<10 || opts.FrameSize > MaxFrameSize/2 {
		return res, fmt.Errorf("%w: compact: frame size %d not in [64 KiB, %d MiB]", castore.ErrInvalid, opts.FrameSize, MaxFrameSize/2>>20)
	}
	if !opts.DryRun {
		if err := s.PackPending(ctx); err != nil {
			return res, err
		}
	}
	s.packMu.Lock()
	defer s.packMu.Unlock()
	db, err := s.acquireFor(ctx, opts.DryRun)
	if err != nil {
		return res, err
	}
	defer s.mu.RUnlock()

	sources, err := s.compactSources(ctx, db, opts.OlderThan)
	if err != nil {
		return res, err
	}
	chunks, err := s.compactChunks(ctx, db, sources)
	if err != nil {
		return res, err
	}
	plan := planCompaction(opts.Order, chunks, sources)
	res.FramesIn = len(sources.order)
	for _, f := range sources.order {
		res.StoredIn += f.stored
	}
	for _, c := range plan {
		res.Chunks++
		res.DecodedBytes += uint64(c.size)
		if !c.framed {
			res.InlineChunks++
			res.StoredIn += uint64(len(c.value))
		}
	}
	if opts.DryRun || len(plan) == 0 {
		return res, nil
	}

	if err := s.writeColdFrames(ctx, db, plan, opts, &res); err != nil {
		return res, err
	}
	deleted, err := s.retireFrames(ctx, db, sources.order)
	res.FramesDeleted = deleted
	return res, err
}

// writeColdFrames writes the chunks of plan, in order, into cold frames of
// opts.FrameSize: frames are filled one after the other and compressed,
// written and switched to by as many workers as there are cores (one when
// throttled).
func (s *Store) writeColdFrames(ctx context.Context, db kvDB, plan []*compactChunk, opts CompactOptions, res *CompactResult) error {
	if opts.DutyCycle < 0 || opts.DutyCycle >= 1 {
		opts.DutyCycle = 0
	}
	workers := runtime.GOMAXPROCS(0)
	if opts.DutyCycle > 0 {
		workers = 1
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	var (
		mu   sync.Mutex // guards res and done
		done int64
	)
	write := func(data []byte, entries []queuedChunk) error {
		start := time.Now()
		obj := compressFrame(opts.Level, data)
		f := &frameInfo{tier: FrameCold, created: time.Now(), decoded: uint64(len(data)), stored: uint64(len(obj)), name: castore.Hash(obj)}
		if err := s.objects.PutObject(ctx, frameName(f.name), obj); err != nil {
			return fmt.Errorf("castore: compact: %w", err)
		}
		if err := s.objects.SyncObjects(ctx); err != nil {
			return fmt.Errorf("castore: compact: %w", err)
		}
		if err := s.switchToFrame(ctx, db, f, entries); err != nil {
			return err
		}
		mu.Lock()
		res.FramesOut++
		res.StoredOut += f.stored
		done += int64(len(data))
		if opts.Progress != nil {
			opts.Progress(done, int64(res.DecodedBytes))
		}
		mu.Unlock()
		if opts.DutyCycle > 0 {
			pause := time.Duration(float64(time.Since(start)) * (1/opts.DutyCycle - 1))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(pause):
			}
		}
		return nil
	}
	cache := newFrameCache(opts.CacheSize)
	var (
		data    []byte
		entries []queuedChunk
	)
	flush := func() {
		if len(entries) > 0 {
			d, e := data, entries
			g.Go(func() error { return write(d, e) })
		}
		data, entries = nil, nil
	}
	for _, c := range plan {
		if ctx.Err() != nil {
			break
		}
		offset := len(data)
		var err error
		if c.framed {
			var frame []byte
			if frame, err = readFrame(ctx, s.objects, cache, c.ref.frame); err == nil {
				data, err = sliceFrame(data, frame, c.ref)
			}
		} else {
			data, err = castore.DecodeChunk(data, c.value)
		}
		if err != nil {
			g.Go(func() error { return fmt.Errorf("castore: compact: chunk %s: %w", c.digest, err) })
			break
		}
		entries = append(entries, queuedChunk{digest: c.digest, size: c.size, inline: c.value, offset: offset})
		if len(data) >= opts.FrameSize {
			flush()
		}
	}
	flush()
	return g.Wait()
}

// CompactDue reports whether a compaction has work: a hot frame written
// more than olderThan ago. It reads the frame registry, not the chunks.
func (s *Store) CompactDue(ctx context.Context, olderThan time.Duration) (bool, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	set, err := s.compactSources(ctx, db, olderThan)
	if err != nil {
		return false, err
	}
	for _, f := range set.order {
		if f.tier == FrameHot {
			return true, nil
		}
	}
	return false, nil
}

// LastWrite returns when this process last stored a new chunk (the zero
// time if it has not).
func (s *Store) LastWrite() time.Time {
	if ns := s.lastWrite.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// compactSet is the frames a compaction reads.
type compactSet struct {
	byName map[castore.Digest]*frameInfo
	order  []*frameInfo // hot frames oldest first, then cold ones
}

// compactSources selects the frames to rewrite: cold ones, and hot ones
// written before olderThan ago.
func (s *Store) compactSources(ctx context.Context, db kvDB, olderThan time.Duration) (*compactSet, error) {
	set := &compactSet{byName: make(map[castore.Digest]*frameInfo)}
	cutoff := time.Now().Add(-olderThan)
	err := scanFrames(ctx, db, func(f *frameInfo) error {
		if f.tier == FrameHot && !f.created.Before(cutoff) {
			return nil
		}
		set.byName[f.name] = f
		set.order = append(set.order, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(set.order, func(a, b *frameInfo) int {
		if a.tier != b.tier {
			return int(a.tier) - int(b.tier)
		}
		return a.created.Compare(b.created)
	})
	return set, nil
}

// scanFrames calls fn with the registry record of every frame, in name
// order, and stops at fn's first error.
func scanFrames(ctx context.Context, db kvDB, fn func(*frameInfo) error) error {
	lower := []byte{pebbleKindFrame}
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return pebbleError(err, "frame registry")
	}
	for it.First(); it.Valid() && err == nil; it.Next() {
		if len(it.Key()) != 1+castore.DigestSize {
			err = fmt.Errorf("%w: frame key of %d bytes", castore.ErrCorrupt, len(it.Key()))
			break
		}
		var name castore.Digest
		copy(name[:], it.Key()[1:])
		var v []byte
		if v, err = it.ValueAndErr(); err != nil {
			err = pebbleError(err, "frame registry")
			break
		}
		var f *frameInfo
		if f, err = decodeFrameInfo(name, v); err == nil {
			err = fn(f)
		}
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = pebbleError(cerr, "frame registry")
	}
	return err
}

// compactChunks scans the chunk index for the chunks to rewrite: those in
// a source frame, and those stored inline.
func (s *Store) compactChunks(ctx context.Context, db kvDB, sources *compactSet) (map[castore.Digest]*compactChunk, error) {
	chunks := make(map[castore.Digest]*compactChunk)
	lower := []byte{pebbleKindChunk}
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return nil, pebbleError(err, "compact")
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(it.Key()) != 1+castore.DigestSize {
			return nil, fmt.Errorf("%w: chunk key of %d bytes", castore.ErrCorrupt, len(it.Key()))
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, pebbleError(err, "compact")
		}
		c := &compactChunk{value: bytes.Clone(v)}
		copy(c.digest[:], it.Key()[1:])
		if len(v) > 0 && v[0] == CodecFrame {
			if c.ref, err = decodeFrameRef(v); err != nil {
				return nil, fmt.Errorf("chunk %s: %w", c.digest, err)
			}
			if sources.byName[c.ref.frame] == nil {
				continue
			}
			c.framed, c.size = true, int(c.ref.length)
		} else if c.size, err = castore.DecodedChunkSize(v); err != nil {
			return nil, fmt.Errorf("chunk %s: %w", c.digest, err)
		}
		chunks[c.digest] = c
	}
	return chunks, nil
}

// planCompaction orders the chunks: first as order lists them, then the
// rest of each source frame in frame order, then the inline ones in digest
// order.
func planCompaction(order []castore.Digest, chunks map[castore.Digest]*compactChunk, sources *compactSet) []*compactChunk {
	plan := make([]*compactChunk, 0, len(chunks))
	take := func(d castore.Digest) {
		if c := chunks[d]; c != nil {
			plan = append(plan, c)
			delete(chunks, d)
		}
	}
	for _, d := range order {
		take(d)
	}
	for _, f := range sources.order {
		for _, fc := range f.chunks {
			if c := chunks[fc.digest]; c != nil && c.framed && c.ref.frame == f.name {
				take(fc.digest)
			}
		}
	}
	rest := make([]castore.Digest, 0, len(chunks))
	for d := range chunks {
		rest = append(rest, d)
	}
	slices.SortFunc(rest, func(a, b castore.Digest) int { return bytes.Compare(a[:], b[:]) })
	for _, d := range rest {
		take(d)
	}
	return plan
}

// retireFrames unregisters every frame of frames that no chunk refers to
// any more, in one synced batch, then deletes them. It returns how many it
// deleted.
func (s *Store) retireFrames(ctx context.Context, db kvDB, frames []*frameInfo) (int, error) {
	var dead []*frameInfo
	for _, f := range frames {
		// The record as it is now: a frame written meanwhile with the
		// same bytes (so the same name) added its chunks to it.
		err := get(ctx, db, pebbleKey(pebbleKindFrame, f.name), "frame", func(v []byte) (err error) {
			f, err = decodeFrameInfo(f.name, v)
			return err
		})
		if errors.Is(err, errNoKey) {
			continue
		}
		if err != nil {
			return 0, err
		}
		live := false
		for _, c := range f.chunks {
			err := get(ctx, db, pebbleKey(pebbleKindChunk, c.digest), "chunk", func(v []byte) error {
				if len(v) > 0 && v[0] == CodecFrame {
					r, err := decodeFrameRef(v)
					live = err == nil && r.frame == f.name
				}
				return nil
			})
			if err != nil && !errors.Is(err, errNoKey) {
				return 0, err
			}
			if live {
				break
			}
		}
		if !live {
			dead = append(dead, f)
		}
	}
	if len(dead) == 0 {
		return 0, nil
	}
	b := db.newBatch()
	defer b.close()
	var delta [numCounters]uint64
	for _, f := range dead {
		b.delete(pebbleKey(pebbleKindFrame, f.name))
		delta[counterStoredBytes] -= f.stored
		delta[counterFrames]--
	}
	b.addCounters(delta[:])
	if err := b.commit(ctx, true); err != nil {
		return 0, pebbleError(err, "retire frames")
	}
	for _, f := range dead {
		if err := s.objects.DeleteObject(ctx, frameName(f.name)); err != nil {
			return 0, err
		}
		s.forgetFrame(f.name)
	}
	return len(dead), nil
}
