package pebblestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// CompactOptions tune Compact. Zero fields take the defaults of
// DefaultCompactOptions.
type CompactOptions struct {
	// Order, when set, is called once the chunks to rewrite are chosen
	// (keep reports whether a chunk is one of them) and lists them in the
	// order to write them; the store layer lists the versions of each
	// file side by side, so that they compress against each other. Chunks
	// it does not list follow in the order of their frames; digests keep
	// refuses are skipped. It runs without the store's read lock, so it
	// may call the store's methods; the packer waits meanwhile.
	Order func(ctx context.Context, keep func(castore.Digest) bool) ([]castore.Digest, error)
	// OlderThan: hot frames written less than this long ago stay as they
	// are.
	OlderThan time.Duration
	// FanOut: the new chunks (of hot frames and stored inline) become a
	// run of cold frames at level 0; when that would make FanOut runs of
	// one level, those runs are merged with it into one run of the next
	// level, and so on up. Each byte is then rewritten about
	// log_FanOut(store / increment) times rather than at every
	// compaction. At least 2.
	FanOut int
	// Full rewrites every cold frame as well, into one run at LevelBase
	// (as every compaction did before runs existed).
	Full bool
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

	// Neighbours: the cold frames holding the neighbours of the new
	// chunks in Order's order (earlier versions of the same files), as
	// Neighbourhood lists them, or Order with every chunk kept on a store
	// of at most neighboursMaxChunks chunks, are rewritten with
	// them, up to Neighbours times the new bytes (see
	// compact_neighbours.go). Not with Full (everything is rewritten).
	// 0 means the default; negative turns it off.
	Neighbours float64
	// Neighbourhood, when set with Order, is what pulling neighbours
	// calls instead of Order with every chunk kept: it lists, in Order's
	// order, the chunks of the files whose versions hold a chunk isNew
	// accepts (the new chunks and the earlier versions of their files),
	// so that memory follows the new chunks' files rather than the whole
	// store, and neighbours are pulled whatever the store's size. Without
	// it, a store of more than neighboursMaxChunks chunks pulls none.
	Neighbourhood func(ctx context.Context, isNew func(castore.Digest) bool) ([]castore.Digest, error)

	// into is the run the frames written belong to; nil: run 0 at
	// LevelBase.
	into *RunInfo
}

// DefaultCompactOptions: 4 MiB cold frames at zstd's best level, 128 MiB
// of decoded source frames cached, runs merged four at a time. (On four
// Go releases, 4 MiB frames grouped by path stored about a tenth less
// than 1 MiB ones.)
var DefaultCompactOptions = CompactOptions{
	FanOut:     4,
	FrameSize:  4 << 20,
	Level:      zstd.SpeedBestCompression,
	CacheSize:  128 << 20,
	Neighbours: 2,
}

// RunInfo describes a run of cold frames: the frames one compaction
// wrote.
type RunInfo struct {
	Run   uint64 `json:"run"`
	Level int    `json:"level"`
	// Frames frames of StoredBytes compressed, DecodedBytes decoded
	// (chunks no longer referenced included).
	Frames       int    `json:"frames"`
	StoredBytes  uint64 `json:"storedBytes"`
	DecodedBytes uint64 `json:"decodedBytes"`
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
	// RewrittenFrom splits DecodedBytes by where the chunks were: "hot"
	// (hot frames), "inline", "level0", "level1", … (runs of cold
	// frames), "base" (LevelBase).
	RewrittenFrom map[string]uint64 `json:"rewrittenBytesFrom"`
	// Merged lists the runs of cold frames read (and replaced).
	Merged []RunInfo `json:"mergedRuns"`
	// Into is the run written: its number and level (frames and bytes
	// as FramesOut and StoredOut); nil when there was nothing to do.
	Into *RunInfo `json:"into,omitempty"`
	// FramesOut cold frames of StoredOut bytes were written (none on a
	// dry run).
	FramesOut int    `json:"framesOut"`
	StoredOut uint64 `json:"storedBytesOut"`
	// FramesDeleted source frames were deleted; a frame still holding a
	// chunk that was not rewritten stays.
	FramesDeleted int `json:"framesDeleted"`
	// FramesPulled cold frames of PulledBytes decoded bytes, not part of
	// the runs merged, were rewritten for holding earlier versions of the
	// new chunks' files (CompactOptions.Neighbours); they are counted in
	// FramesIn and RewrittenFrom too.
	FramesPulled int    `json:"framesPulled,omitempty"`
	PulledBytes  uint64 `json:"pulledBytes,omitempty"`
	// NeighboursSkipped: no Neighbourhood was given and the store holds
	// more than neighboursMaxChunks chunks, too many to list in memory,
	// so no neighbours were pulled.
	NeighboursSkipped bool `json:"neighboursSkipped,omitempty"`
}

// neighboursMaxChunks bounds the chunks of a store whose compactions pull
// neighbours: listing every chunk in file order holds about 70 bytes a
// chunk, 140 MB at this bound.
var neighboursMaxChunks uint64 = 2 << 20

// compactChunk is a chunk being compacted: its index value when planned
// and where its bytes are.
type compactChunk struct {
	digest castore.Digest
	value  []byte // the index value read when planning
	size   int
	framed bool
	ref    frameRef
}

// Compact rewrites chunks into a new run of cold frames in the order
// opts.Order gives: the chunks of hot frames older than opts.OlderThan
// and those still stored inline (queued chunks are packed first), with
// the runs they merge with as opts.FanOut says (every cold frame with
// opts.Full). Each new frame is written and synced before the chunks are
// switched to it; the source frames are unregistered in one synced batch
// and deleted after that, so a crash at any point leaves every chunk
// readable (a frame left behind is deleted on the next open). Reads and
// writes go on meanwhile; the packer waits.
//
// Memory: an entry per chunk rewritten (its index value: about 100 bytes,
// the whole chunk for one stored inline), the source frames still to be
// read from (at most opts.CacheSize decoded; a frame is dropped once its
// last chunk is copied), and a zstd encoder and a frame being filled per
// worker (about 50 MiB each at the best level); finding the chunks scans
// the chunk index once.
func (s *Store) Compact(ctx context.Context, opts CompactOptions) (CompactResult, error) {
	var res CompactResult
	if opts.FanOut == 0 {
		opts.FanOut = DefaultCompactOptions.FanOut
	}
	if opts.FrameSize == 0 {
		opts.FrameSize = DefaultCompactOptions.FrameSize
	}
	if opts.Level == 0 {
		opts.Level = DefaultCompactOptions.Level
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCompactOptions.CacheSize
	}
	if opts.Neighbours == 0 {
		opts.Neighbours = DefaultCompactOptions.Neighbours
	}
	if opts.FrameSize < 64<<10 || opts.FrameSize > MaxFrameSize/2 {
		return res, fmt.Errorf("%w: compact: frame size %d not in [64 KiB, %d MiB]", castore.ErrInvalid, opts.FrameSize, MaxFrameSize/2>>20)
	}
	if opts.FanOut < 2 {
		return res, fmt.Errorf("%w: compact: fan-out %d below 2", castore.ErrInvalid, opts.FanOut)
	}
	if !opts.DryRun {
		if err := s.PackPending(ctx); err != nil {
			return res, err
		}
	}
	s.packMu.Lock()
	defer s.packMu.Unlock()

	sources, chunks, err := s.selectCompaction(ctx, opts)
	if err != nil {
		return res, err
	}
	var order []castore.Digest
	pull := opts.Neighbours > 0 && !opts.Full && !sources.full()
	if opts.Order != nil && len(chunks) > 0 {
		if pull && opts.Neighbourhood == nil {
			st, err := s.Stats(ctx)
			if err != nil {
				return res, err
			}
			if st.Chunks > neighboursMaxChunks {
				pull, res.NeighboursSkipped = false, true
			}
		}
		keep := func(d castore.Digest) bool { return chunks[d] != nil }
		switch {
		case pull && opts.Neighbourhood != nil:
			order, err = opts.Neighbourhood(ctx, keep)
		case pull:
			order, err = opts.Order(ctx, func(castore.Digest) bool { return true })
		default:
			order, err = opts.Order(ctx, keep)
		}
		if err != nil {
			return res, err
		}
		if pull {
			if res.PulledBytes, err = s.pullNeighbours(ctx, order, chunks, sources, opts); err != nil {
				return res, err
			}
			res.FramesPulled = len(sources.pulled)
			if res.FramesPulled > 0 {
				if chunks, err = s.rescanChunks(ctx, sources); err != nil {
					return res, err
				}
			}
		}
	}
	plan := planCompaction(order, chunks, sources)
	res.FramesIn = len(sources.order)
	res.Merged = sources.runs
	res.RewrittenFrom = make(map[string]uint64)
	for _, f := range sources.order {
		res.StoredIn += f.stored
	}
	for _, c := range plan {
		res.Chunks++
		res.DecodedBytes += uint64(c.size)
		from := "inline"
		if c.framed {
			from = levelName(sources.byName[c.ref.frame])
		} else {
			res.InlineChunks++
			res.StoredIn += uint64(len(c.value))
		}
		res.RewrittenFrom[from] += uint64(c.size)
	}
	if len(plan) > 0 || len(sources.order) > 0 {
		into := sources.into
		res.Into = &into
	}
	if opts.DryRun {
		return res, nil
	}
	if res.Into == nil {
		if sources.resume != nil {
			// An interrupted compaction left nothing to take up.
			db, err := s.acquireWrite(ctx)
			if err != nil {
				return res, err
			}
			defer s.mu.RUnlock()
			_, err = s.retireFrames(ctx, db, nil, compactingKey)
			return res, err
		}
		return res, nil
	}

	db, err := s.acquireWrite(ctx)
	if err != nil {
		return res, err
	}
	defer s.mu.RUnlock()
	opts.into = res.Into
	marker := compactMarker{cutoff: sources.cutoff, into: res.Into.Run, full: res.Into.Level == LevelBase}
	if err := writeCompactMarker(ctx, db, marker); err != nil {
		return res, err
	}
	if res.Into.Level != LevelBase {
		// Records of a run: binaries that know only layout 2 must refuse
		// the store rather than misread them.
		if err := requireLayout(ctx, db, layoutRuns); err != nil {
			return res, err
		}
	}
	if err := s.writeColdFrames(ctx, db, plan, opts, &res); err != nil {
		return res, err
	}
	res.Into.Frames, res.Into.StoredBytes, res.Into.DecodedBytes = res.FramesOut, res.StoredOut, res.DecodedBytes
	// The marker goes in the batch that unregisters the source frames: a
	// crash before it resumes this compaction, one after it finds it done.
	deleted, err := s.retireFrames(ctx, db, sources.order, compactingKey)
	res.FramesDeleted = deleted
	return res, err
}

// levelName names where a source frame's chunks come from in
// CompactResult.RewrittenFrom.
func levelName(f *frameInfo) string {
	switch {
	case f == nil:
		return "unknown"
	case f.tier == FrameHot:
		return "hot"
	case f.level == LevelBase:
		return "base"
	}
	return "level" + strconv.Itoa(f.level)
}

// selectCompaction chooses the source frames and finds the chunks to
// rewrite, under the store's read lock.
func (s *Store) selectCompaction(ctx context.Context, opts CompactOptions) (*compactSet, map[castore.Digest]*compactChunk, error) {
	db, err := s.acquireFor(ctx, opts.DryRun)
	if err != nil {
		return nil, nil, err
	}
	defer s.mu.RUnlock()
	sources, err := s.compactSources(ctx, db, opts)
	if err != nil {
		return nil, nil, err
	}
	chunks, err := s.compactChunks(ctx, db, sources)
	if err != nil {
		return nil, nil, err
	}
	inline := false
	for _, c := range chunks {
		if !c.framed {
			inline = true
			break
		}
	}
	if inline && !sources.fresh {
		// Only chunks stored inline are new: they make a level-0 run, which
		// may merge as one made from hot frames would.
		sources.fresh = true
		if err := s.chooseRuns(sources, opts); err != nil {
			return nil, nil, err
		}
		if chunks, err = s.compactChunks(ctx, db, sources); err != nil {
			return nil, nil, err
		}
	}
	return sources, chunks, nil
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
		obj := compressFrame(opts.Level, data, s.filterFrames())
		f := &frameInfo{tier: FrameCold, created: time.Now(), decoded: uint64(len(data)), stored: uint64(len(obj)), name: castore.Hash(obj), level: LevelBase, filtered: s.filterFrames()}
		if opts.into != nil && opts.into.Level != LevelBase {
			f.run, f.level = opts.into.Run, opts.into.Level
		}
		if err := s.objects.PutObject(ctx, frameName(f.name), obj); err != nil {
			return fmt.Errorf("castore: compact: %w", err)
		}
		if err := s.objects.SyncObjects(ctx); err != nil {
			return fmt.Errorf("castore: compact: %w", err)
		}
		if err := s.switchToFrame(ctx, db, f, entries); err != nil {
			return err
		}
		if err := s.claimFrame(ctx, db, f); err != nil {
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
	// A source frame leaves the cache as soon as its last chunk in plan is
	// copied, rather than when newer frames push it out: memory then holds
	// the frames still needed, not the cache's whole budget.
	cache := newFrameCache(opts.CacheSize)
	left := make(map[castore.Digest]int)
	for _, c := range plan {
		if c.framed {
			left[c.ref.frame]++
		}
	}
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
		if data == nil {
			data = make([]byte, 0, opts.FrameSize+opts.FrameSize/8)
		}
		offset := len(data)
		var err error
		if c.framed {
			var frame *frameEntry
			if frame, _, err = readFrame(ctx, s.objects, cache, c.ref.frame); err == nil {
				data, err = sliceFrame(data, frame.data, c.ref)
				cache.release(frame)
			}
			if left[c.ref.frame]--; left[c.ref.frame] == 0 {
				cache.forget(c.ref.frame)
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

// claimFrame makes f, just written and switched to, part of the run f
// names. A frame of the same bytes was registered before (as part of a
// run being merged, or by an interrupted compaction) when its record says
// another run: it is rewritten to say this one, so that the frame is not
// taken for part of the run it came from.
func (s *Store) claimFrame(ctx context.Context, db kvDB, f *frameInfo) error {
	key := pebbleKey(pebbleKindFrame, f.name)
	var known *frameInfo
	err := get(ctx, db, key, "frame", func(v []byte) (err error) {
		known, err = decodeFrameInfo(f.name, v)
		return err
	})
	if errors.Is(err, errNoKey) {
		return nil // no chunk moved: it was never registered
	}
	if err != nil {
		return err
	}
	if known.tier == f.tier && known.run == f.run && known.level == f.level {
		return nil
	}
	known.tier, known.run, known.level, known.created = f.tier, f.run, f.level, f.created
	b := db.newBatch()
	defer b.close()
	b.set(key, known.encode())
	if err := b.commit(ctx, true); err != nil {
		return pebbleError(err, "frame registry")
	}
	return nil
}

// CompactDue reports whether a compaction with opts (OlderThan and FanOut
// count) has work: a hot frame written more than opts.OlderThan ago, runs
// of one level numbering opts.FanOut or more (left by a smaller fan-out),
// or a compaction interrupted after it chose what to rewrite (a crash,
// a kill, a cancel: see compact_resume.go), whatever the age of its hot
// frames. It reads the frame registry, not the chunks.
func (s *Store) CompactDue(ctx context.Context, opts CompactOptions) (bool, error) {
	if opts.FanOut == 0 {
		opts.FanOut = DefaultCompactOptions.FanOut
	}
	db, err := s.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	set, err := s.compactSources(ctx, db, opts)
	if err != nil {
		return false, err
	}
	return len(set.hot) > 0 || len(set.runs) > 0 || set.resume != nil, nil
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
	// runs are the runs of cold frames merged, lowest level first; into
	// the run written.
	runs []RunInfo
	into RunInfo
	// fresh: there are new chunks (old hot frames, or inline chunks).
	fresh bool
	// cutoff: hot frames created before it are taken.
	cutoff time.Time
	// resume is the marker of an interrupted compaction, nil if none.
	resume *compactMarker
	// coldFrames: every cold frame by name; pulled: those taken for
	// holding neighbours of the new chunks (see pullNeighbours).
	coldFrames map[castore.Digest]*frameInfo
	pulled     []*frameInfo

	hot       []*frameInfo            // hot frames old enough
	cold      map[uint64][]*frameInfo // frames of each run
	levelRuns map[int][]uint64        // runs of each level, oldest first
	runOf     map[uint64]*RunInfo     // each run's figures
}

// compactSources reads the frame registry and selects the frames to
// rewrite: hot ones written before opts.OlderThan ago, and the runs of
// cold frames they merge with (see chooseRuns).
func (s *Store) compactSources(ctx context.Context, db kvDB, opts CompactOptions) (*compactSet, error) {
	set := &compactSet{
		coldFrames: make(map[castore.Digest]*frameInfo),
		cold:       make(map[uint64][]*frameInfo),
		levelRuns:  make(map[int][]uint64),
		runOf:      make(map[uint64]*RunInfo),
	}
	cutoff := time.Now().Add(-opts.OlderThan)
	m, ok, err := readCompactMarker(ctx, db)
	if err != nil {
		return nil, err
	}
	if ok {
		set.resume = &m
		if m.cutoff.After(cutoff) {
			cutoff = m.cutoff
		}
	}
	set.cutoff = cutoff
	var maxRun uint64
	err = scanFrames(ctx, db, func(f *frameInfo) error {
		if f.tier == FrameHot {
			if f.created.Before(cutoff) {
				set.hot = append(set.hot, f)
			}
			return nil
		}
		maxRun = max(maxRun, f.run)
		r := set.runOf[f.run]
		if r == nil {
			r = &RunInfo{Run: f.run, Level: f.level}
			set.runOf[f.run] = r
			set.levelRuns[f.level] = append(set.levelRuns[f.level], f.run)
		}
		if r.Level != f.level {
			return fmt.Errorf("%w: frame %s of run %d at level %d, others of the run at level %d",
				castore.ErrCorrupt, frameName(f.name), f.run, f.level, r.Level)
		}
		r.Frames++
		r.StoredBytes += f.stored
		r.DecodedBytes += f.decoded
		set.cold[f.run] = append(set.cold[f.run], f)
		set.coldFrames[f.name] = f
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, runs := range set.levelRuns {
		slices.Sort(runs)
	}
	set.into.Run = maxRun + 1
	set.fresh = len(set.hot) > 0
	return set, s.chooseRuns(set, opts)
}

// chooseRuns picks the runs to merge and the level of the run to write.
// With opts.Full, every run, into LevelBase. Otherwise the new chunks, if
// any, make a run of level 0; while the runs of a level, that one
// included, number opts.FanOut or more, they are all merged into one run
// of the next level. Without new chunks, the lowest level with that many
// runs (left after a crash, or by a smaller fan-out) is merged the same
// way. LevelBase is never merged but by a full compaction. An
// interrupted compaction (set.resume) is taken up again: a full one as
// full, another with the part of its run already written merged in.
func (s *Store) chooseRuns(set *compactSet, opts CompactOptions) error {
	set.byName = make(map[castore.Digest]*frameInfo)
	set.order = set.order[:0]
	set.runs = set.runs[:0]
	take := func(run uint64) {
		set.runs = append(set.runs, *set.runOf[run])
		for _, f := range set.cold[run] {
			set.byName[f.name] = f
			set.order = append(set.order, f)
		}
	}
	slices.SortStableFunc(set.hot, func(a, b *frameInfo) int { return a.created.Compare(b.created) })
	for _, f := range set.hot {
		set.byName[f.name] = f
		set.order = append(set.order, f)
	}
	levels := slices.Sorted(maps.Keys(set.levelRuns))
	if opts.Full || set.resume != nil && set.resume.full {
		for _, l := range levels {
			for _, run := range set.levelRuns[l] {
				take(run)
			}
		}
		set.into.Run, set.into.Level = 0, LevelBase
		return nil
	}
	incoming := set.fresh
	set.into.Level = 0
	for l := 0; l < LevelBase; l++ {
		n := len(set.levelRuns[l])
		if r := set.resume; r != nil && set.runOf[r.into] != nil && set.runOf[r.into].Level == l {
			n-- // part of the run being written, not one of its own
		}
		if incoming {
			n++
		}
		if n >= opts.FanOut {
			for _, run := range set.levelRuns[l] {
				take(run)
			}
			incoming = true
			set.into.Level = l + 1
			continue
		}
		if incoming {
			break
		}
		if len(levels) == 0 || l >= levels[len(levels)-1] {
			break
		}
	}
	if r := set.resume; r != nil && set.runOf[r.into] != nil && !slices.ContainsFunc(set.runs, func(ri RunInfo) bool { return ri.Run == r.into }) {
		// The part of the interrupted compaction's run already written:
		// merged into the run written now, at its level at least.
		set.into.Level = max(set.into.Level, set.runOf[r.into].Level)
		take(r.into)
	}
	if set.into.Level >= LevelBase {
		return fmt.Errorf("%w: compact: runs reach level %d", castore.ErrInvalid, set.into.Level)
	}
	return nil
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
		// Most chunks of a large store are in frames the compaction
		// leaves: they cost no allocation.
		var c compactChunk
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
		c.value = bytes.Clone(v)
		kept := new(compactChunk)
		*kept = c
		chunks[c.digest] = kept
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
// deleted. The records of alsoDelete are deleted in the same batch
// (committed even when no frame is retired).
func (s *Store) retireFrames(ctx context.Context, db kvDB, frames []*frameInfo, alsoDelete ...[]byte) (int, error) {
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
	if len(dead) == 0 && len(alsoDelete) == 0 {
		return 0, nil
	}
	b := db.newBatch()
	defer b.close()
	for _, k := range alsoDelete {
		b.delete(k)
	}
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
