package pebblestore

import (
	"bytes"
	"container/list"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/bufpool"
	"github.com/nixcas/nixcas/internal/callfilter"
)

// Frames
//
// A Store keeps chunk bytes in frames: objects (see ObjectStore) each
// holding many chunks side by side, compressed together as one zstd frame
// so that each chunk is compressed with its neighbours as context. A frame
// is named by the hex BLAKE3 of its compressed bytes, is written once and
// never changed, and is decoded whole; the chunk index ('c' keys) maps each
// chunk to (frame, offset, length) in the decoded frame:
//
//	CodecFrame ‖ frame digest (32) ‖ uvarint offset ‖ uvarint length
//
// A chunk is first written inline, as before (codec byte + payload, in the
// same Pebble batch as a queue entry 'q' sequence → digest), so a put is
// durable and ordered exactly as every other write. The packer takes queued
// chunks in ingest order, writes them as a hot frame once a frame's worth
// has gathered, and switches their index entries to the frame in one batch
// that also drops the queue entries and registers the frame ('F' key). A
// crash before that batch leaves the chunks inline and queued, and the
// frame, registered nowhere, is deleted on the next open.
//
// Compaction (compact.go) rewrites chunks into cold frames, grouped as the
// caller orders them (by file path across versions, from the store layer),
// at a high zstd level.
//
// Registry value ('F' frame digest →):
//
//	tier byte ‖ uvarint created (unix seconds) ‖ uvarint compressed size ‖
//	uvarint decoded size ‖ [uvarint run ‖ uvarint level] ‖
//	n × (chunk digest (32) ‖ uvarint size)
//
// The tier byte is FrameHot or FrameCold, with bit 0x40 (frameFiltered)
// set for a filtered frame (see compressFrame) and bit 0x80 (frameHasRun)
// set when the run and level follow: a cold frame written by an incremental
// compaction belongs to a run (a number unique in the store, shared by the
// frames one compaction wrote) of a level (0: made from hot frames; l+1:
// made by merging runs of level l). Values written before runs existed
// have the bit clear; such a cold frame is read as part of run 0 at
// LevelBase, as is a frame of `compact --full` or of a garbage
// collection's rewrite.

// CodecFrame: the chunk lives in a frame (see above).
const CodecFrame byte = 2

// Frame tiers.
const (
	// FrameHot: written by the packer, chunks in ingest order.
	FrameHot byte = 0
	// FrameCold: written by compaction.
	FrameCold byte = 1

	// frameHasRun flags a tier byte followed by run and level.
	frameHasRun byte = 0x80
	// frameFiltered flags a frame whose bytes went through the x86 call
	// filter before compression (see compressFrame).
	frameFiltered byte = 0x40
)

// LevelBase is the level of the cold frames that belong to no
// incremental run: those of a full compaction, of a garbage collection's
// rewrite, and those written before runs existed. They form one run
// (run 0) that only a full compaction rewrites.
const LevelBase = 255

// MaxFrameSize bounds the decoded size of any frame a store writes or
// decodes.
const MaxFrameSize = 64 << 20

const (
	pebbleKindQueue byte = 'q'
	pebbleKindFrame byte = 'F'
)

// FrameOptions tune how a Store packs chunks into frames. Zero fields
// take the defaults of DefaultFrameOptions.
type FrameOptions struct {
	// Size is the decoded size of a hot frame: the packer writes one once
	// this many bytes of chunks are queued.
	Size int
	// Level is the zstd level of hot frames.
	Level zstd.EncoderLevel
	// CacheSize bounds the decoded frames kept in memory for reads, in
	// bytes.
	CacheSize int64
	// DecodedCacheSize bounds the decoded frames kept on disk for reads
	// (see decoded.go), in bytes: 0 for DefaultDecodedCacheSize, negative
	// for none.
	DecodedCacheSize int64
	// DecodedCacheDir is where they are kept: DATA/decoded when empty.
	DecodedCacheDir string
	// Off keeps new chunks inline (codec byte + payload in Pebble), as
	// layout version 1 did: nothing is queued or packed (compaction still
	// moves chunks into frames). For tests of Pebble itself and for
	// comparisons.
	Off bool
	// NoCallFilter writes frames (hot, cold, rewritten) without the x86
	// call filter (see compressFrame), as binaries before layout version 4
	// did: for comparisons, and for a store that such binaries must still
	// open. Frames already written are read either way.
	NoCallFilter bool
}

// DefaultFrameOptions: 4 MiB hot frames at zstd's default level, 64 MiB of
// decoded frames cached in memory, 4 GiB on disk.
var DefaultFrameOptions = FrameOptions{
	Size:             4 << 20,
	Level:            zstd.SpeedDefault,
	CacheSize:        64 << 20,
	DecodedCacheSize: DefaultDecodedCacheSize,
}

func (o FrameOptions) ensureDefaults() FrameOptions {
	if o.Size == 0 {
		o.Size = DefaultFrameOptions.Size
	}
	if o.Level == 0 {
		o.Level = DefaultFrameOptions.Level
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultFrameOptions.CacheSize
	}
	if o.DecodedCacheSize == 0 {
		o.DecodedCacheSize = DefaultFrameOptions.DecodedCacheSize
	}
	return o
}

func (o FrameOptions) validate() error {
	switch {
	case o.Size < 64<<10 || o.Size > MaxFrameSize/2:
		return fmt.Errorf("%w: frame size %d not in [64 KiB, %d MiB]", castore.ErrInvalid, o.Size, MaxFrameSize/2>>20)
	case o.Level < zstd.SpeedFastest || o.Level > zstd.SpeedBestCompression:
		return fmt.Errorf("%w: frame zstd level %d", castore.ErrInvalid, o.Level)
	case o.CacheSize < 0:
		return fmt.Errorf("%w: frame cache size %d", castore.ErrInvalid, o.CacheSize)
	}
	return nil
}

// frameRef is where a chunk lives in a frame.
type frameRef struct {
	frame  castore.Digest
	offset uint32
	length uint32
}

func (r frameRef) encode(dst []byte) []byte {
	dst = append(dst, CodecFrame)
	dst = append(dst, r.frame[:]...)
	dst = binary.AppendUvarint(dst, uint64(r.offset))
	return binary.AppendUvarint(dst, uint64(r.length))
}

func decodeFrameRef(v []byte) (frameRef, error) {
	var r frameRef
	if len(v) < 1+castore.DigestSize+2 || v[0] != CodecFrame {
		return r, fmt.Errorf("%w: frame reference of %d bytes", castore.ErrCorrupt, len(v))
	}
	copy(r.frame[:], v[1:])
	rest := v[1+castore.DigestSize:]
	off, n := binary.Uvarint(rest)
	if n <= 0 {
		return r, fmt.Errorf("%w: frame reference offset", castore.ErrCorrupt)
	}
	length, m := binary.Uvarint(rest[n:])
	if m <= 0 || n+m != len(rest) || off+length > MaxFrameSize || length > castore.MaxChunkSize {
		return r, fmt.Errorf("%w: frame reference length", castore.ErrCorrupt)
	}
	r.offset, r.length = uint32(off), uint32(length)
	return r, nil
}

// frameName is the object name of a frame.
func frameName(d castore.Digest) string { return hex.EncodeToString(d[:]) }

// parseFrameName is the inverse of frameName.
func parseFrameName(name string) (castore.Digest, bool) {
	var d castore.Digest
	if len(name) != 2*castore.DigestSize {
		return d, false
	}
	if _, err := hex.Decode(d[:], []byte(name)); err != nil {
		return d, false
	}
	return d, frameName(d) == name
}

// frameChunk is one chunk of a frame, as the registry lists it.
type frameChunk struct {
	digest castore.Digest
	size   uint32
}

// frameInfo is a frame's registry record.
type frameInfo struct {
	name    castore.Digest
	tier    byte
	created time.Time
	stored  uint64 // compressed bytes
	decoded uint64
	// run and level: the compaction run of a cold frame (0 and LevelBase
	// for one of no incremental run; 0 and 0 for a hot frame).
	run   uint64
	level int
	// filtered: the frame's stored bytes begin with filteredFrameHeader.
	filtered bool
	chunks   []frameChunk
}

func (f *frameInfo) encode() []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(f.chunks)*(castore.DigestSize+3))
	hasRun := f.tier == FrameCold && f.level != LevelBase
	tier := f.tier
	if hasRun {
		tier |= frameHasRun
	}
	if f.filtered {
		tier |= frameFiltered
	}
	b = append(b, tier)
	b = binary.AppendUvarint(b, uint64(f.created.Unix()))
	b = binary.AppendUvarint(b, f.stored)
	b = binary.AppendUvarint(b, f.decoded)
	if hasRun {
		b = binary.AppendUvarint(b, f.run)
		b = binary.AppendUvarint(b, uint64(f.level))
	}
	for _, c := range f.chunks {
		b = append(b, c.digest[:]...)
		b = binary.AppendUvarint(b, uint64(c.size))
	}
	return b
}

func decodeFrameInfo(name castore.Digest, v []byte) (*frameInfo, error) {
	bad := func(what string) (*frameInfo, error) {
		return nil, fmt.Errorf("%w: frame %s registry record: %s", castore.ErrCorrupt, frameName(name), what)
	}
	if len(v) < 4 {
		return bad("too short")
	}
	f := &frameInfo{name: name, tier: v[0] &^ (frameHasRun | frameFiltered), filtered: v[0]&frameFiltered != 0}
	hasRun := v[0]&frameHasRun != 0
	if f.tier != FrameHot && f.tier != FrameCold || hasRun && f.tier != FrameCold {
		return bad(fmt.Sprintf("tier byte %#x", v[0]))
	}
	rest := v[1:]
	vals := make([]uint64, 3, 5)
	if hasRun {
		vals = vals[:5]
	}
	for i := range vals {
		x, n := binary.Uvarint(rest)
		if n <= 0 {
			return bad("header")
		}
		vals[i], rest = x, rest[n:]
	}
	f.created = time.Unix(int64(vals[0]), 0)
	f.stored, f.decoded = vals[1], vals[2]
	switch {
	case hasRun && vals[4] >= LevelBase:
		return bad(fmt.Sprintf("level %d", vals[4]))
	case hasRun:
		f.run, f.level = vals[3], int(vals[4])
	case f.tier == FrameCold:
		f.level = LevelBase
	}
	for len(rest) > 0 {
		if len(rest) < castore.DigestSize+1 {
			return bad("chunk list")
		}
		var c frameChunk
		copy(c.digest[:], rest)
		size, n := binary.Uvarint(rest[castore.DigestSize:])
		if n <= 0 || size > castore.MaxChunkSize {
			return bad("chunk size")
		}
		c.size = uint32(size)
		f.chunks = append(f.chunks, c)
		rest = rest[castore.DigestSize+n:]
	}
	return f, nil
}

// zstdEncoder appends src compressed as one zstd frame, at level, with a
// window of at least window bytes, to dst.
type zstdEncoder func(level zstd.EncoderLevel, window int, src, dst []byte) []byte

// goEncoders are the Go library's encoders, one pool per level and window.
var goEncoders sync.Map // encoderKey → *sync.Pool of *zstd.Encoder

type encoderKey struct {
	level  zstd.EncoderLevel
	window int
}

// zstdEncodeGo is the zstdEncoder of the Go library, which compresses
// frames when cgo is off (zstd_nocgo.go).
func zstdEncodeGo(level zstd.EncoderLevel, window int, src, dst []byte) []byte {
	key := encoderKey{level, window}
	p, _ := goEncoders.LoadOrStore(key, &sync.Pool{New: func() any {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(key.level),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(key.window))
		if err != nil {
			panic(err) // only for invalid options, which FrameOptions.validate refuses
		}
		return enc
	}})
	pool := p.(*sync.Pool)
	enc := pool.Get().(*zstd.Encoder)
	defer pool.Put(enc)
	return enc.EncodeAll(src, dst)
}

// filteredFrameHeader begins the stored bytes of a filtered frame: a zstd
// skippable frame (magic 0x184D2A5E, 4 bytes of content, "NXC1") before
// the zstd frame of the filtered bytes. The zstd tool skips it (and then
// prints the filtered bytes); DecodeFrame undoes the filter.
var filteredFrameHeader = []byte{0x5E, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'N', 'X', 'C', '1'}

// filterBuffers hold the filtered copy of a frame being compressed.
var filterBuffers sync.Pool // of *[]byte

// compressFrame compresses data as one zstd frame with zstdEncode (the
// C library's when cgo is on); with filter, data is first put through the
// x86 call filter (package callfilter, on a copy: data is not modified)
// and the frame stored behind filteredFrameHeader. The frame carries no
// content checksum: it is named by the BLAKE3 of its stored bytes, which
// every read checks first. The window covers the frame (up to
// maxFrameWindow): a larger one would only cost the encoder memory.
func compressFrame(level zstd.EncoderLevel, data []byte, filter bool) []byte {
	return compressFrameWith(zstdEncode, level, data, filter)
}

// compressFrameWith is compressFrame with encode.
func compressFrameWith(encode zstdEncoder, level zstd.EncoderLevel, data []byte, filter bool) []byte {
	window := 1 << 20
	for window < len(data) && window < maxFrameWindow {
		window <<= 1
	}
	obj := make([]byte, 0, len(data)/2)
	if !filter {
		return encode(level, window, data, obj)
	}
	buf, _ := filterBuffers.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	defer filterBuffers.Put(buf)
	*buf = append((*buf)[:0], data...)
	callfilter.Encode(*buf)
	obj = append(obj, filteredFrameHeader...)
	return encode(level, window, *buf, obj)
}

// filterFrames reports whether the frames s writes go through the call
// filter.
func (s *Store) filterFrames() bool { return !s.frameOpts.NoCallFilter }

// frameIsFiltered reports whether the stored bytes obj of a frame are of
// a filtered frame.
func frameIsFiltered(obj []byte) bool { return bytes.HasPrefix(obj, filteredFrameHeader) }

// frameBody returns the zstd frame in the stored bytes obj of a frame,
// and whether it is filtered (behind filteredFrameHeader).
func frameBody(obj []byte) (zstdFrame []byte, filtered bool) {
	return bytes.CutPrefix(obj, filteredFrameHeader)
}

// maxFrameWindow is the largest zstd window of the frames the store
// writes: as far back as the compressor looks for matches.
const maxFrameWindow = 8 << 20

// frameDecoders decode frames, whichever library compressed them. They
// skip zstd's checksum of the decoded bytes (frames written before this
// version carry one): DecodeFrame checks the stored bytes against the
// frame's name before it decodes them, which leaves the checksum nothing
// to find.
var frameDecoders = sync.Pool{New: func() any {
	dec, err := zstd.NewReader(nil,
		zstd.IgnoreChecksum(true),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxFrameSize),
		zstd.WithDecoderMaxWindow(MaxFrameSize))
	if err != nil {
		panic(err)
	}
	return dec
}}

// DecodeFrame checks the stored bytes obj of frame name against the name
// and appends them decoded (at most MaxFrameSize) to dst: ErrCorrupt,
// naming the frame, for bytes that do not match or do not decode. For
// whoever receives frames as stored (castore.FrameSource).
func DecodeFrame(name castore.Digest, obj, dst []byte) ([]byte, error) {
	if got := castore.Hash(obj); got != name {
		return dst, fmt.Errorf("%w: frame %s: its %d bytes hash to %s", castore.ErrCorrupt, frameName(name), len(obj), got)
	}
	obj, filtered := frameBody(obj)
	dec := frameDecoders.Get().(*zstd.Decoder)
	defer frameDecoders.Put(dec)
	data, err := dec.DecodeAll(obj, dst)
	if err != nil {
		return dst, fmt.Errorf("%w: frame %s: %v", castore.ErrCorrupt, frameName(name), err)
	}
	if filtered {
		callfilter.Decode(data[len(dst):])
	}
	return data, nil
}

// frameCache keeps decoded frames, least recently used first out, up to a
// budget of decoded bytes, and decodes each frame once however many
// readers ask for it at the same time. A reader holds the frame it was
// given until it releases it; the buffer of a frame that is out of the
// cache and held by no one goes back to decodedFrameBuffers for the next
// frame decoded, rather than to the garbage collector.
type frameCache struct {
	max int64

	mu      sync.Mutex
	used    int64
	entries map[castore.Digest]*frameEntry
	lru     list.List // of *frameEntry, most recent at the front
}

type frameEntry struct {
	name  castore.Digest
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
	elem  *list.Element // nil while loading or once evicted
	// refs counts the holders of data: each reader given it, and the
	// cache while elem is set. Guarded by frameCache.mu.
	refs int
}

func newFrameCache(max int64) *frameCache {
	return &frameCache{max: max, entries: make(map[castore.Digest]*frameEntry)}
}

// acquire returns the decoded frame, calling load for it unless it is
// cached or being loaded; loaded says this call loaded it. The frame's
// data is shared: never modify it, and release it once done with it.
func (c *frameCache) acquire(ctx context.Context, name castore.Digest, load func() ([]byte, error)) (e *frameEntry, loaded bool, err error) {
	c.mu.Lock()
	e, ok := c.entries[name]
	if ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		e.refs++
		c.mu.Unlock()
		select {
		case <-e.ready:
			if e.err != nil {
				c.release(e)
				return nil, false, e.err
			}
			return e, false, nil
		case <-ctx.Done():
			c.release(e)
			return nil, false, ctx.Err()
		}
	}
	e = &frameEntry{name: name, ready: make(chan struct{}), refs: 1}
	c.entries[name] = e
	c.mu.Unlock()

	e.data, e.err = load()
	c.mu.Lock()
	var evicted []*frameEntry
	if e.err != nil || int64(len(e.data)) > c.max {
		delete(c.entries, name)
	} else {
		e.elem = c.lru.PushFront(e)
		e.refs++
		c.used += int64(len(e.data))
		for c.used > c.max {
			evicted = append(evicted, c.lru.Back().Value.(*frameEntry))
			c.dropLocked(evicted[len(evicted)-1])
		}
	}
	c.mu.Unlock()
	close(e.ready)
	for _, old := range evicted {
		c.release(old)
	}
	if e.err != nil {
		c.release(e)
		return nil, false, e.err
	}
	return e, true, nil
}

// dropLocked takes e out of the cache; the caller then releases the
// cache's hold on it (outside c.mu).
func (c *frameCache) dropLocked(e *frameEntry) {
	c.lru.Remove(e.elem)
	e.elem = nil
	delete(c.entries, e.name)
	c.used -= int64(len(e.data))
}

// hold adds a holder to e, which its current holder has not released.
func (c *frameCache) hold(e *frameEntry) {
	c.mu.Lock()
	e.refs++
	c.mu.Unlock()
}

// release drops a hold on e; the last one gives its buffer back.
func (c *frameCache) release(e *frameEntry) {
	c.mu.Lock()
	e.refs--
	refs := e.refs
	c.mu.Unlock()
	if refs < 0 {
		// A buffer given back twice may be decoded into while read.
		panic("castore: frame cache: frame " + frameName(e.name) + " released more often than held")
	}
	if refs == 0 && e.data != nil {
		decodedFrameBuffers.Put(e.data)
	}
}

// forget drops a frame from the cache (after it was deleted).
func (c *frameCache) forget(name castore.Digest) {
	c.mu.Lock()
	e, ok := c.entries[name]
	if !ok || e.elem == nil {
		c.mu.Unlock()
		return
	}
	c.dropLocked(e)
	c.mu.Unlock()
	c.release(e)
}

// peek returns the decoded frame if it is cached (not while it loads),
// held as acquire's.
func (c *frameCache) peek(name castore.Digest) (*frameEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok || e.elem == nil {
		return nil, false
	}
	c.lru.MoveToFront(e.elem)
	e.refs++
	return e, true
}

// decodedFrameBuffers and storedFrameBuffers recycle the buffers of
// frames read: a first render decodes every frame it reads, and a fresh
// 4 MiB buffer costs its zeroing and a page fault every 4 KiB, which on a
// virtual machine cost more than decoding into it (see Scale and serving
// speed in the README).
var decodedFrameBuffers, storedFrameBuffers bufpool.Shared

// storedFrameHint is the capacity asked of storedFrameBuffers: a 4 MiB
// frame stores in about a third of that, and the pool gives buffers of up
// to bufpool.MaxCap of it. A larger frame (incompressible) gets a buffer
// of its own, not kept: kept, it would never be given again.
const storedFrameHint = 2 << 20

// readFrame returns frame name decoded, through cache, held: release it.
func readFrame(ctx context.Context, objects ObjectStore, cache *frameCache, name castore.Digest) (*frameEntry, bool, error) {
	return cache.acquire(ctx, name, func() ([]byte, error) { return loadFrame(ctx, objects, name) })
}

// loadFrame reads frame name from objects and decodes it into a buffer of
// decodedFrameBuffers.
func loadFrame(ctx context.Context, objects ObjectStore, name castore.Digest) ([]byte, error) {
	obj, err := objects.GetObject(ctx, frameName(name), 0, -1, storedFrameBuffers.Get(storedFrameHint))
	if errors.Is(err, castore.ErrNotFound) {
		return nil, fmt.Errorf("%w: frame %s: %v", errFrameMissing, frameName(name), err)
	}
	if err != nil {
		return nil, fmt.Errorf("frame %s: %w", frameName(name), err)
	}
	if cap(obj) <= bufpool.MaxCap(storedFrameHint) {
		defer storedFrameBuffers.Put(obj)
	}
	dst := decodedFrameBuffers.Get(decodedSizeHint(obj))
	data, err := DecodeFrame(name, obj, dst)
	if err != nil {
		decodedFrameBuffers.Put(dst)
		return nil, err
	}
	return data, nil
}

// decodedSizeHint returns the decoded size the header of frame obj
// declares (0 if it declares none, or is not a frame).
func decodedSizeHint(obj []byte) int {
	body, _ := frameBody(obj)
	var h zstd.Header
	if h.Decode(body) != nil || !h.HasFCS || h.FrameContentSize > MaxFrameSize {
		return 0
	}
	return int(h.FrameContentSize)
}

// readChunkInFrame appends the chunk d at r to dst: from the decoded
// frames in memory, else from the frame's decoded file, else by decoding
// the frame (once, however many readers want it at the same time), which
// is then kept in memory and queued to be kept on disk.
func (s *Store) readChunkInFrame(ctx context.Context, d castore.Digest, r frameRef, dst []byte) ([]byte, error) {
	if e, ok := s.cache.peek(r.frame); ok {
		defer s.cache.release(e)
		return sliceFrame(dst, e.data, r)
	}
	if out, ok := s.decoded.read(r, d, dst); ok {
		return out, nil
	}
	e, loaded, err := readFrame(ctx, s.objects, s.cache, r.frame)
	if err != nil {
		return dst, err
	}
	defer s.cache.release(e)
	if loaded {
		s.cache.hold(e)
		s.decoded.keep(r.frame, e.data, func() { s.cache.release(e) })
	}
	return sliceFrame(dst, e.data, r)
}

// forgetFrame drops a deleted frame's decoded bytes, in memory and on
// disk, and the chunk places remembered (some may be in it).
func (s *Store) forgetFrame(name castore.Digest) {
	s.places.reset()
	s.cache.forget(name)
	s.decoded.forget(name)
}

// errFrameMissing: the index named a frame that is not there. A reader
// that meets it looks the chunk up again once (compaction may have moved
// it); a second miss is corruption.
var errFrameMissing = errors.New("castore: frame missing")

// sliceFrame appends the chunk at r in the decoded frame to dst.
func sliceFrame(dst, frame []byte, r frameRef) ([]byte, error) {
	end := uint64(r.offset) + uint64(r.length)
	if end > uint64(len(frame)) {
		return dst, fmt.Errorf("%w: frame %s: chunk at %d+%d beyond its %d bytes",
			castore.ErrCorrupt, frameName(r.frame), r.offset, r.length, len(frame))
	}
	return append(dst, frame[r.offset:end]...), nil
}

// storedChunkSize returns the uncompressed size of a chunk's index value,
// inline or in a frame, without reading the frame.
func storedChunkSize(v []byte) (int, error) {
	if len(v) > 0 && v[0] == CodecFrame {
		r, err := decodeFrameRef(v)
		if err != nil {
			return 0, err
		}
		return int(r.length), nil
	}
	return castore.DecodedChunkSize(v)
}
