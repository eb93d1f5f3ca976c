package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// The packer: queued inline chunks into hot frames (see frames.go).

// queueKey returns the key of queue entry seq.
func queueKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = pebbleKindQueue
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// queueValue is a queue entry's value: the chunk digest and its size.
func queueValue(d castore.Digest, size int) []byte {
	return binary.AppendUvarint(append(make([]byte, 0, castore.DigestSize+3), d[:]...), uint64(size))
}

func decodeQueueValue(v []byte) (castore.Digest, int, error) {
	var d castore.Digest
	if len(v) < castore.DigestSize+1 {
		return d, 0, fmt.Errorf("%w: queue entry of %d bytes", castore.ErrCorrupt, len(v))
	}
	copy(d[:], v)
	size, n := binary.Uvarint(v[castore.DigestSize:])
	if n <= 0 || castore.DigestSize+n != len(v) || size > castore.MaxChunkSize {
		return d, 0, fmt.Errorf("%w: queue entry size", castore.ErrCorrupt)
	}
	return d, int(size), nil
}

// loadQueue sets the next queue sequence number and the queued bytes from
// the queue entries in db.
func (s *Store) loadQueue(ctx context.Context, db kvDB) error {
	lower := []byte{pebbleKindQueue}
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return fmt.Errorf("castore: load queue: %w", err)
	}
	var queued int64
	var last uint64
	for it.First(); it.Valid(); it.Next() {
		if len(it.Key()) != 9 {
			it.Close()
			return fmt.Errorf("%w: queue key of %d bytes", castore.ErrCorrupt, len(it.Key()))
		}
		last = binary.BigEndian.Uint64(it.Key()[1:])
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return pebbleError(err, "load queue")
		}
		_, size, err := decodeQueueValue(v)
		if err != nil {
			it.Close()
			return err
		}
		queued += int64(size)
	}
	if err := it.Close(); err != nil {
		return pebbleError(err, "load queue")
	}
	db.initSeq(last)
	s.queued.Store(queued)
	return nil
}

// startPacker starts the goroutine that packs full frames as chunks are
// queued.
func (s *Store) startPacker() {
	s.packSignal = make(chan struct{}, 1)
	stop, done := make(chan struct{}), make(chan struct{})
	s.stopPacking = func() {
		close(stop)
		<-done
	}
	go s.packLoop(stop, done)
	s.signalPacker()
}

// signalPacker wakes the packer when a frame's worth is queued.
func (s *Store) signalPacker() {
	if s.packSignal != nil && s.queued.Load() >= int64(s.frameOpts.Size) {
		select {
		case s.packSignal <- struct{}{}:
		default:
		}
	}
}

// stopPacker stops the packer, waiting for a pack in progress. It reports
// whether this call stopped it.
func (s *Store) stopPacker() bool {
	stopped := false
	s.packStopped.Store(true)
	if s.stopPacking != nil {
		s.packStopOnce.Do(func() {
			s.stopPacking()
			stopped = true
		})
	}
	return stopped
}

// A packer whose pack failed (object storage down, disk full) tries again
// after packRetryMin, doubling up to packRetryMax, even if nothing more is
// written meanwhile.
const (
	packRetryMin = time.Second
	packRetryMax = time.Minute
)

func (s *Store) packLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	var (
		lastErr string
		retry   <-chan time.Time // while packing fails: when to try again
		backoff = packRetryMin
	)
	for {
		select {
		case <-stop:
			return
		case <-s.packSignal:
		case <-retry:
		}
		retry = nil
		for s.queued.Load() >= int64(s.frameOpts.Size) {
			packed, err := s.packOne(ctx, false)
			s.packFailing.Store(err != nil)
			if err != nil {
				if ctx.Err() == nil && err.Error() != lastErr {
					// The chunks stay inline and queued: nothing is lost,
					// and the next signal, or the retry, tries again.
					slog.Warn("castore: packing chunks into a frame failed; they stay stored unpacked", "dir", s.dir, "err", err)
					lastErr = err.Error()
				}
				retry = time.After(backoff)
				backoff = min(2*backoff, packRetryMax)
				break
			}
			lastErr, backoff = "", packRetryMin
			if !packed {
				break
			}
		}
	}
}

// notifyPacked wakes the writers waiting for the packer.
func (s *Store) notifyPacked() {
	s.packedMu.Lock()
	if s.packed != nil {
		close(s.packed)
	}
	s.packed = make(chan struct{})
	s.packedMu.Unlock()
}

// waitForPacker holds a writer back while more than maxPackLag bytes are
// queued and not yet read by the packer, so that the packer reads
// queued chunks from the memtable: fallen further behind, it would read
// them from disk through the block cache, and Pebble would have written
// them out for nothing. Ingest then runs at the packer's pace. A failing
// packer (a full disk, say) holds nobody back.
func (s *Store) waitForPacker(ctx context.Context) error {
	for s.packSignal != nil && s.queued.Load() > s.maxPackLag && !s.packFailing.Load() && !s.packStopped.Load() {
		s.packedMu.Lock()
		if s.packed == nil {
			s.packed = make(chan struct{})
		}
		ch := s.packed
		s.packedMu.Unlock()
		s.signalPacker()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// PackPending packs every queued chunk into hot frames, the last one
// possibly smaller than a frame. Tools, tests and compaction call it; the
// packer writes only full frames.
func (s *Store) PackPending(ctx context.Context) error {
	if s.readOnly {
		return nil
	}
	// Not bounded by s.queued: chunks the packer has read count as
	// unqueued while it packs them, and packOne waits for that pack.
	for {
		packed, err := s.packOne(ctx, true)
		if err != nil || !packed {
			return err
		}
	}
}

// queuedChunk is a queue entry being packed.
type queuedChunk struct {
	key       []byte // queue key (nil for a compaction's chunk)
	digest    castore.Digest
	size      int
	wasInline bool   // the packer found the chunk stored inline
	inline    []byte // a compaction's chunk: its index value when planned
	imported  bool   // an imported frame's chunk, absent from the store when planned (import.go)
	offset    int
}

// moving reports whether the chunk goes into the frame at all.
func (e *queuedChunk) moving() bool { return e.wasInline || e.inline != nil || e.imported }

// still reports whether the chunk's index value now, of size bytes, is as
// it was when the chunk was read: for the packer, any inline value (a
// chunk deleted and put again is the same bytes), for a compaction the
// very value planned; an imported chunk was absent, so any value means it
// was stored meanwhile. v is the value, or nil when it is longer than
// stillSize(e) (see switchToFrameOnce).
func (e *queuedChunk) still(v []byte, size int) bool {
	if e.imported {
		return false
	}
	if e.key != nil {
		// A value longer than any frame reference is inline.
		return size > 0 && (v == nil || v[0] != CodecFrame)
	}
	return size == len(e.inline) && bytes.Equal(v, e.inline)
}

// stillSize is the size up to which still needs e's value itself.
func (e *queuedChunk) stillSize() int {
	return max(frameRefMaxSize, len(e.inline))
}

// packBatchBytes bounds the bytes of the hot frames one pack writes
// before it syncs them and switches chunks to them: one sync for all of
// them (a sync costs 20 to 40 ms on this project's VM disk, whatever it
// covers). The pack holds those frames decoded and compressed meanwhile,
// so it is a bound on bytes, not frames: with 4 MiB frames a pack holds
// what 32 frames of 1 MiB did (the peak RSS of a 1 GiB ingest moved
// within its spread, 379 to 436 MiB either way: see e2eMaxRSS).
const packBatchBytes = 32 << 20

// packReadPage and packReadBytes bound the queue entries the packer reads
// at once, and so the chunks it holds besides its frames.
const (
	packReadPage  = 256
	packReadBytes = 8 << 20
)

// What the packer keeps between packs, so that a store packing a frame or
// two at a time does not allocate their buffers each time: its value
// buffer up to maxKeptPackArena bytes, and up to maxKeptFrameBuffers frame
// buffers.
const (
	maxKeptPackArena    = 16 << 20
	maxKeptFrameBuffers = 4
)

// frameBuffer returns an empty buffer for a hot frame's chunks, with room
// for a frame and the chunk that ends it (a frame ends with the chunk that
// reaches Size), so that it is never copied to grow. Called holding
// packMu.
func (s *Store) frameBuffer() []byte {
	if n := len(s.frameBufs); n > 0 {
		b := s.frameBufs[n-1]
		s.frameBufs = s.frameBufs[:n-1]
		return b[:0]
	}
	return make([]byte, 0, s.frameOpts.Size+castore.DefaultChunkerOptions.MaxSize)
}

// keepFrameBuffer takes back a buffer from frameBuffer once its frame is
// written. Called holding packMu.
func (s *Store) keepFrameBuffer(b []byte) {
	if b != nil && len(s.frameBufs) < maxKeptFrameBuffers && cap(b) == s.frameOpts.Size+castore.DefaultChunkerOptions.MaxSize {
		s.frameBufs = append(s.frameBufs, b[:0])
	}
}

// valueSpan locates a value in a buffer: buf[start:end].
type valueSpan struct{ start, end int }

// pendingFrame is a frame being packed.
type pendingFrame struct {
	data    []byte
	entries []queuedChunk
	queued  int // bytes of the queued chunks it takes that were stored inline (see queued in Store)
}

// packOne packs queued chunks, oldest first, into up to packBatchBytes of hot
// frames of a frame's worth each, the last one smaller when force is set.
// The frames are written, synced together, then switched to. It reports
// whether it consumed queue entries.
func (s *Store) packOne(ctx context.Context, force bool) (bool, error) {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()

	frames := []*pendingFrame{{}}
	// What this process counted queued as it began reading the queue (see
	// the recount below).
	counted := s.queued.Load()
	lower := []byte{pebbleKindQueue}
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return false, pebbleError(err, "pack")
	}
	// The queue is read a page at a time, and a page's chunks in one
	// getMany (one query on PostgreSQL, where a get is a round trip).
	var (
		page  []queuedChunk
		keys  [][]byte
		full  bool
		arena = s.packArena // the page's inline values, one buffer for all pages
	)
	defer func() {
		if cap(arena) <= maxKeptPackArena {
			s.packArena = arena[:0]
		}
	}()
	for it.First(); it.Valid() && !full; {
		page, keys, arena = page[:0], keys[:0], arena[:0]
		pageBytes := 0
		for ; it.Valid() && len(page) < packReadPage && pageBytes < packReadBytes; it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				it.Close()
				return false, pebbleError(err, "pack")
			}
			d, size, err := decodeQueueValue(v)
			if err != nil {
				it.Close()
				return false, err
			}
			pageBytes += size
			page = append(page, queuedChunk{key: bytes.Clone(it.Key()), digest: d, size: size})
			keys = append(keys, pebbleKey(pebbleKindChunk, d))
		}
		if err := it.Error(); err != nil {
			it.Close()
			return false, pebbleError(err, "pack")
		}
		// values[i] is the span of arena holding page[i]'s inline value
		// (getMany's v lives only during the call); a framed chunk has
		// none.
		values := make([]valueSpan, len(page))
		err := db.getMany(ctx, keys, func(i int, v []byte) error {
			if len(v) > 0 && v[0] != CodecFrame {
				values[i] = valueSpan{start: len(arena), end: len(arena) + len(v)}
				arena = append(arena, v...)
			}
			return nil
		})
		if err != nil {
			it.Close()
			return false, fmt.Errorf("chunks: %w", err)
		}
		for i, e := range page {
			cur := frames[len(frames)-1]
			if len(cur.data) >= s.frameOpts.Size {
				if len(frames) >= max(1, packBatchBytes/s.frameOpts.Size) {
					full = true
					break
				}
				cur = &pendingFrame{}
				frames = append(frames, cur)
			}
			if cur.data == nil {
				cur.data = s.frameBuffer()
			}
			if v := values[i]; v.end > 0 {
				cur.queued += e.size
				e.offset = len(cur.data)
				if cur.data, err = castore.DecodeChunk(cur.data, arena[v.start:v.end]); err != nil {
					it.Close()
					return false, fmt.Errorf("chunk %s: %w", e.digest, err)
				}
				e.wasInline = true
			}
			cur.entries = append(cur.entries, e)
		}
	}
	if err := it.Close(); err != nil {
		return false, pebbleError(err, "pack")
	}
	defer func(all []*pendingFrame) {
		for _, pf := range all {
			s.keepFrameBuffer(pf.data)
		}
	}(frames) // all of them, the last one dropped below too
	defer s.notifyPacked()
	if last := frames[len(frames)-1]; len(last.entries) == 0 || !force && len(last.data) < s.frameOpts.Size {
		frames = frames[:len(frames)-1]
		if len(frames) == 0 && !full {
			// The whole queue was read: less than a frame of chunks
			// waits in it, len(last.data) bytes. The count of this
			// process can be far above that: on a shared database
			// other processes pack the chunks it queued, and a
			// collection deletes queued chunks (their entries stay
			// until a frame takes them, and count for nothing then).
			// Writers waiting for the packer on a count too high would
			// wait for ever. A chunk queued while the queue was read
			// may be counted twice; the next recount mends that.
			s.queued.Add(int64(len(last.data)) - counted)
		}
	}
	if len(frames) == 0 {
		return false, nil
	}
	// The chunks are read: writers need not wait for the rest (see
	// waitForPacker). Should the pack fail, they count as queued again.
	read := 0
	for _, pf := range frames {
		read += pf.queued
	}
	if s.queued.Add(-int64(read)) < 0 {
		// Chunks another process queued on a shared database: this
		// process never counted them.
		s.queued.Store(0)
	}
	done := false
	defer func() {
		if !done {
			s.queued.Add(int64(read))
		}
	}()
	// Compress and write the frames on every core.
	infos := make([]*frameInfo, len(frames))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, pf := range frames {
		f := &frameInfo{tier: FrameHot, created: time.Now(), decoded: uint64(len(pf.data)), filtered: s.filterFrames()}
		infos[i] = f
		if len(pf.data) == 0 {
			continue
		}
		g.Go(func() error {
			obj := compressFrame(s.frameOpts.Level, pf.data, f.filtered)
			f.name = castore.Hash(obj)
			f.stored = uint64(len(obj))
			if err := s.objects.PutObject(gctx, frameName(f.name), obj); err != nil {
				return fmt.Errorf("castore: pack: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}
	if err := s.objects.SyncObjects(ctx); err != nil {
		return false, fmt.Errorf("castore: pack: %w", err)
	}
	for i, pf := range frames {
		if err := s.switchToFrame(ctx, db, infos[i], pf.entries); err != nil {
			// The frames switched before stay switched; the rest stay
			// queued and count so again.
			s.queued.Add(int64(read))
			for _, done := range frames[:i] {
				s.queued.Add(-int64(done.queued))
			}
			done = true
			return false, err
		}
	}
	done = true
	return true, nil
}

// switchToFrame points every chunk of entries that is still stored as it
// was read (or, imported, still absent) at the frame f (when f has a
// name), registers f, drops the queue entries, and adjusts the counters,
// in one batch, holding the lock stripes of the chunks. The packer,
// compaction, garbage collection's rewrite and ImportFrames all register
// frames through it.
//
// On a shared database the batch's reads lock the chunks until it
// commits, so that two processes packing the same queued chunk switch it
// once (the other frame keeps no chunk, and a collection retires it); a
// frame registered meanwhile by another process (the same bytes, so the
// same name) makes the batch start again, to extend its chunk list.
func (s *Store) switchToFrame(ctx context.Context, db kvDB, f *frameInfo, entries []queuedChunk) error {
	if f.filtered && !s.filteredLayout.Load() {
		// Binaries that know no filter must refuse the store rather than
		// read filtered bytes as chunks.
		if err := requireLayout(ctx, db, layoutFiltered); err != nil {
			return err
		}
		s.filteredLayout.Store(true)
	}
	unlock := s.lockStripes(func(yield func(castore.Digest) bool) {
		for _, e := range entries {
			if e.moving() && !yield(e.digest) {
				return
			}
		}
	})
	defer unlock()
	chunks := f.chunks
	for {
		f.chunks = chunks
		err := s.switchToFrameOnce(ctx, db, f, entries)
		if !errors.Is(err, errKeyExists) {
			return err
		}
	}
}

// switchToFrameOnce is one attempt of switchToFrame, holding the stripes.
func (s *Store) switchToFrameOnce(ctx context.Context, db kvDB, f *frameInfo, entries []queuedChunk) error {
	b := db.newBatch()
	defer b.close()
	var delta [numCounters]uint64
	var ref []byte
	// The chunks' values as they are now, read (and on a shared database
	// locked) in one getManySmall: an inline chunk's bytes, which the
	// packer has read already, are not read again (only their size).
	var keys [][]byte
	var at []int // entries' index of each key
	small := 0
	if f.stored > 0 {
		for i, e := range entries {
			if e.moving() {
				keys = append(keys, pebbleKey(pebbleKindChunk, e.digest))
				at = append(at, i)
				small = max(small, e.stillSize())
			}
		}
	}
	same := make([]bool, len(entries))
	for i, e := range entries {
		same[i] = e.imported // still absent unless getManySmall finds it
	}
	inlineLen := make([]int, len(entries))
	err := b.getManySmall(ctx, keys, small, func(j int, v []byte, size int) error {
		i := at[j]
		same[i] = entries[i].still(v, size)
		if same[i] && (v == nil || v[0] != CodecFrame) {
			inlineLen[i] = size
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A chunk deleted (by a garbage collection) and stored again while
	// queued has two queue entries: it is switched once.
	switched := make(map[castore.Digest]bool, len(entries))
	for i, e := range entries {
		if e.key != nil {
			b.delete(e.key)
		}
		// A frame of no bytes (an empty chunk alone) is never written:
		// such a chunk stays inline, where it takes one byte.
		if !e.moving() || f.stored == 0 || switched[e.digest] {
			continue
		}
		if !same[i] {
			continue // deleted or moved meanwhile
		}
		switched[e.digest] = true
		ref = frameRef{frame: f.name, offset: uint32(e.offset), length: uint32(e.size)}.encode(ref[:0])
		f.chunks = append(f.chunks, frameChunk{digest: e.digest, size: uint32(e.size)})
		if e.imported {
			// A new chunk: counted as a put counts it.
			b.insert(pebbleKey(pebbleKindChunk, e.digest), ref)
			delta[counterChunks]++
			delta[counterUniqueChunkBytes] += uint64(e.size)
			continue
		}
		b.set(pebbleKey(pebbleKindChunk, e.digest), ref)
		// An inline value leaves the count; a frame's bytes are counted
		// per frame.
		delta[counterStoredBytes] -= uint64(inlineLen[i])
	}
	if f.stored > 0 {
		// Frames are named by their bytes: a compaction that rewrites
		// what an interrupted one wrote makes the same frame again, which
		// is registered and counted once.
		fkey := pebbleKey(pebbleKindFrame, f.name)
		var known *frameInfo
		err := b.get(ctx, fkey, func(v []byte) (err error) {
			known, err = decodeFrameInfo(f.name, v)
			return err
		})
		if err != nil && !errors.Is(err, errNoKey) {
			return err
		}
		if known == nil {
			b.insert(fkey, f.encode())
			delta[counterStoredBytes] += f.stored
			delta[counterFrames]++
		} else {
			// Its chunk list names every chunk that may point at it.
			listed := make(map[castore.Digest]bool, len(known.chunks))
			for _, c := range known.chunks {
				listed[c.digest] = true
			}
			for _, c := range f.chunks {
				if !listed[c.digest] {
					known.chunks = append(known.chunks, c)
				}
			}
			b.set(fkey, known.encode())
		}
	}
	b.addCounters(delta[:])
	if err := s.space.admit(b.size()); err != nil {
		return err
	}
	if err := b.commit(ctx, false); errors.Is(err, errKeyExists) {
		return err
	} else if err != nil {
		return fmt.Errorf("switch chunks to frame %s: %w", frameName(f.name), err)
	}
	return nil
}

// lockStripes locks the stripes of the digests, each once and in order (so
// that two callers never wait for each other), and returns the unlock.
func (s *Store) lockStripes(digests func(yield func(castore.Digest) bool)) func() {
	var idx []int
	for d := range digests {
		idx = append(idx, int(binary.LittleEndian.Uint32(d[:4])&uint32(len(s.stripes)-1)))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.stripes[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.stripes[i].Unlock()
		}
	}
}

// sweepFrames deletes the objects no registry record names: frames a crash
// left between writing them and switching chunks to them, or between
// unregistering and deleting them. Only a writable open calls it, before
// anything else can write.
//
// On a shared database it does nothing: another process may be between
// writing a frame and switching chunks to it. A collection deletes such
// strays once they are old enough (gcStrayFrames).
func (s *Store) sweepFrames(ctx context.Context, db kvDB) error {
	if db.shared() {
		return nil
	}
	registered := make(map[castore.Digest]bool)
	err := scanFrames(ctx, db, func(f *frameInfo) error {
		registered[f.name] = true
		return nil
	})
	if err != nil {
		return err
	}
	var stray []string
	err = s.objects.ListObjects(ctx, func(name string, _ int64) error {
		if d, ok := parseFrameName(name); ok && !registered[d] {
			stray = append(stray, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range stray {
		if err := s.objects.DeleteObject(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// packState groups the packer's fields of a Store.
type packState struct {
	packFailing atomic.Bool // the packer's last pack failed: writers do not wait for it
	packStopped atomic.Bool // the packer is gone: writers do not wait for it
	packedMu    sync.Mutex
	packed      chan struct{} // closed (and replaced) after each pack

	packMu       sync.Mutex // one pack or compaction at a time
	packArena    []byte     // packOne's value buffer, kept between packs (under packMu)
	frameBufs    [][]byte   // hot frame buffers, kept between packs (under packMu)
	packSignal   chan struct{}
	stopPacking  func() // nil: no packer
	packStopOnce sync.Once
}
