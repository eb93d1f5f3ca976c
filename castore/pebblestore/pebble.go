package pebblestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/nixcas/nixcas/castore"
)

// The key kinds and the layout are described in the package doc (doc.go).
const (
	pebbleKindChunk     byte = 'c'
	pebbleKindBlobIndex byte = 'b'
	pebbleKindDirectory byte = 'd'
	pebbleKindMeta      byte = 'm'
)

// Every other key kind is free for the layers above, which keep their
// records in the same database through SetMeta, GetMeta and ScanMeta
// (package store defines the Nix layer's: 'p', 'n' and 'u');
// checkMetaKind refuses castore's own.

// Layout versions, stored under 'm' "version" (uvarint). A database of a
// version above pebbleLayoutVersion is refused; older ones are read as
// they are.
//   - 1 had no frames; a writable open upgrades it to 2 (its inline chunks
//     stay readable, and compaction moves them into frames).
//   - 2 has frames; a store that never compacted incrementally stays at 2,
//     so that binaries that know only 2 still open it.
//   - 3: frame registry records may name a run of cold frames (incremental
//     compaction). Compact writes 3 before the first such record, so that
//     binaries that know only 2 refuse the store by its version rather than
//     misread a record.
//   - 4: frames may be filtered (see compressFrame). Written before the
//     first filtered frame is registered (switchToFrame), so that binaries
//     that know only 3 refuse the store rather than read filtered bytes.
const (
	layoutFrames        = 2
	layoutRuns          = 3
	layoutFiltered      = 4
	pebbleLayoutVersion = layoutFiltered
)

var (
	pebbleVersionKey  = []byte{pebbleKindMeta, 'v', 'e', 'r', 's', 'i', 'o', 'n'}
	pebbleCountersKey = []byte{pebbleKindMeta, 'c', 'o', 'u', 'n', 't', 'e', 'r', 's'}
)

// Positions in the counter vector. Frequent single-counter updates come
// first so their delta operand is short.
const (
	counterLogicalBytes = iota
	counterUniqueChunkBytes
	counterStoredBytes
	counterChunks
	counterBlobs
	counterDirectories
	counterFrames
	numCounters
)

// blobIndexEntrySize is the size of one stored blob index entry.
const blobIndexEntrySize = castore.DigestSize + 4

// Options tune a Store. Zero fields take the defaults of
// DefaultOptions.
type Options struct {
	// CacheSize is the size of Pebble's block cache in bytes.
	CacheSize int64
	// MemTableSize is the size of one memtable in bytes. Pebble starts
	// small and grows memtables up to this size; up to two may be held
	// while one is flushed.
	MemTableSize uint64
	// ValueSeparationMinSize: values of at least this many bytes (chunks,
	// in practice) are written to blob files, out of the LSM tree, so
	// compactions do not rewrite them.
	ValueSeparationMinSize int
	// DisableValueSeparation keeps all values in the LSM tree.
	DisableValueSeparation bool
	// FlushFileSize is the target size of the files a memtable flush
	// writes, counting the values a table's blob file holds; deeper levels
	// double it at each level. Chunk keys are random, so every flush spans
	// the whole key space: Pebble's default (2 MiB) would cut a flush into
	// many tables each with a small blob file of its own, which stays
	// small until a compaction rewrites it.
	FlushFileSize int64
	// LockStripes is the number of mutexes that serialize puts of the same
	// digest; a power of two.
	LockStripes int
	// MinFreeBytes is the free disk space kept beyond room to flush both
	// memtables: a write is refused with ErrNoSpace once the file system
	// has less free than 2 × MemTableSize + MinFreeBytes, and so is a
	// writable open.
	MinFreeBytes uint64
	// NoSpaceGuard turns that check off: a write that meets a full disk
	// then waits until space is freed (see diskspace.go). For tests of
	// that path.
	NoSpaceGuard bool
	// Frames tune how chunks are packed into frames.
	Frames FrameOptions
	// Objects holds the frames; nil means files under the data
	// directory's "frames" subdirectory (DirObjects).
	Objects ObjectStore
	// RecordUses persists a use record of every chunk, blob and
	// directory written or deduplicated against, so that a garbage
	// collection keeps what was used within its grace period (see
	// gcuse.go). Stores a server writes to record uses; chunk caches
	// need not.
	RecordUses bool
	// CopyTarget opens the target of a copy that has not finished (see
	// CopyStore), which is otherwise refused: its records are only part
	// of its source's.
	CopyTarget bool
	// ReadOnly makes OpenPostgres open the store for reading only (Open
	// ignores it: OpenReadOnly is its read-only open).
	ReadOnly bool
}

// DefaultOptions: 256 MiB cache, 32 MiB memtables, values of 1 KiB
// and more separated, 16 MiB flush files, 256 lock stripes, 64 MiB kept
// free beyond the memtables (128 MiB in all). (With a 64 MiB
// cache, rendering a 200 MiB NAR from a flushed store of inline chunks ran
// at 1.4 GB/s; with 256 MiB, at 2.1 GB/s: BenchmarkRender in bench/.
// Chunks in frames are read through the frame cache instead. Memtables
// hold chunks only until the packer has them in frames: ingesting a 1 GiB
// file peaked at 353 MiB RSS with 64 MiB memtables, 259 MiB with 32 MiB.)
var DefaultOptions = Options{
	CacheSize:              256 << 20,
	MemTableSize:           32 << 20,
	ValueSeparationMinSize: 1 << 10,
	FlushFileSize:          16 << 20,
	LockStripes:            256,
	MinFreeBytes:           64 << 20,
	Frames:                 DefaultFrameOptions,
}

// EnsureDefaults fills zero fields from DefaultOptions.
func (o Options) EnsureDefaults() Options {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultOptions.CacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultOptions.MemTableSize
	}
	if o.ValueSeparationMinSize == 0 {
		o.ValueSeparationMinSize = DefaultOptions.ValueSeparationMinSize
	}
	if o.FlushFileSize == 0 {
		o.FlushFileSize = DefaultOptions.FlushFileSize
	}
	if o.LockStripes == 0 {
		o.LockStripes = DefaultOptions.LockStripes
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultOptions.MinFreeBytes
	}
	o.Frames = o.Frames.ensureDefaults()
	return o
}

// Validate checks the options after EnsureDefaults.
func (o Options) Validate() error {
	switch {
	case o.CacheSize < 0:
		return fmt.Errorf("%w: pebble: cache size %d", castore.ErrInvalid, o.CacheSize)
	case o.MemTableSize < 1<<20 || o.MemTableSize >= 4<<30:
		return fmt.Errorf("%w: pebble: memtable size %d not in [1 MiB, 4 GiB)", castore.ErrInvalid, o.MemTableSize)
	case o.ValueSeparationMinSize <= 0:
		return fmt.Errorf("%w: pebble: value separation minimum size %d", castore.ErrInvalid, o.ValueSeparationMinSize)
	case o.FlushFileSize < 64<<10 || o.FlushFileSize > 1<<30:
		return fmt.Errorf("%w: pebble: flush file size %d not in [64 KiB, 1 GiB]", castore.ErrInvalid, o.FlushFileSize)
	case o.LockStripes <= 0 || o.LockStripes&(o.LockStripes-1) != 0:
		return fmt.Errorf("%w: pebble: lock stripes %d is not a power of two", castore.ErrInvalid, o.LockStripes)
	case o.MinFreeBytes > 1<<50:
		return fmt.Errorf("%w: pebble: minimum free space %d bytes", castore.ErrInvalid, o.MinFreeBytes)
	}
	return o.Frames.validate()
}

// reserve returns the free space a write needs (see MinFreeBytes) and how
// it is made up.
func (o Options) reserve() (uint64, string) {
	return 2*o.MemTableSize + o.MinFreeBytes, fmt.Sprintf("2 memtables of %s + %s",
		formatMiB(o.MemTableSize), formatMiB(o.MinFreeBytes))
}

// pebbleLogger is the logger the store gives Pebble.
var pebbleLogger pebble.Logger = quietPebbleLogger{pebble.DefaultLogger}

// pebbleOptions returns the Pebble options for o, on the file system fs.
func (o Options) pebbleOptions(cache *pebble.Cache, fs *storeFS) *pebble.Options {
	po := &pebble.Options{
		Cache:        cache,
		MemTableSize: o.MemTableSize,
		Merger:       pebbleCounterMerger,
		// Value separation needs this format (sstable format v7).
		FormatMajorVersion: pebble.FormatValueSeparation,
		Logger:             pebbleLogger,
		FS:                 fs,
		ReadOnly:           fs.readOnly,
		Cleaner:            deletingCleaner{},
	}
	po.TargetFileSizes[0] = o.FlushFileSize
	for i := range po.Levels {
		// Every key is looked up by exact match (HasChunk before each
		// put, mostly misses), so bloom filters pay off at all levels.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		// Keys are digests, chunk values are already lz4-compressed or
		// incompressible, blob indexes are digests: block compression
		// would only spend CPU.
		po.Levels[i].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	}
	if !o.DisableValueSeparation {
		policy := pebble.ValueSeparationPolicy{
			Enabled:     true,
			MinimumSize: o.ValueSeparationMinSize,
			// As the pebble command's defaults, except that blob files
			// with a fifth of their values unreferenced are rewritten.
			MaxBlobReferenceDepth: 10,
			RewriteMinimumAge:     5 * time.Minute,
			TargetGarbageRatio:    0.2,
		}
		po.Experimental.ValueSeparationPolicy = func() pebble.ValueSeparationPolicy { return policy }
	}
	return po
}

// Store keeps everything in one Pebble database (see the layout in the
// package doc). It is safe for concurrent use. Writes are not synced as
// they are made: call Sync to make them durable (Close does too). A write
// is refused with ErrNoSpace while the disk is nearly full (see
// diskspace.go); a store opened with OpenReadOnly refuses every write with
// ErrInvalid.
type Store struct {
	dir      string
	stripes  []paddedMutex
	fs       *storeFS
	space    *spaceGuard // nil: writes are not checked
	readOnly bool

	// mu guards db against Close: operations hold it for reading.
	mu sync.RWMutex
	db kvDB
	// writers is WriteConcurrency: 0 for as many as cores.
	writers int

	objects   ObjectStore
	frameOpts FrameOptions
	cache     *frameCache
	decoded   *decodedCache // nil: off (or read-only)
	places    *placeCache   // nil: off (see chunkplace.go)
	queued    atomic.Int64  // bytes of queued inline chunks, as this process counts them (see packOne)
	lastWrite atomic.Int64  // unix nanoseconds of the last new chunk
	// maxPackLag: writers wait while more queued bytes than this wait for
	// the packer (see waitForPacker).
	maxPackLag int64
	packState
	gcState

	// layoutErr, once set, refuses every operation: another process
	// raised the shared database's layout version above this binary's
	// (checkSharedLayout, last run at layoutChecked, unix nanoseconds).
	layoutErr     atomic.Pointer[error]
	layoutChecked atomic.Int64
	// filteredLayout: the layout version is known to be at least
	// layoutFiltered (see switchToFrame).
	filteredLayout atomic.Bool
}

var (
	_ castore.Store        = (*Store)(nil)
	_ castore.ChunkDeleter = (*Store)(nil)
	_ castore.ChunkScanner = (*Store)(nil)
	_ castore.Packer       = (*Store)(nil)
	_ castore.Flusher      = (*Store)(nil)
	_ castore.DiskUser     = (*Store)(nil)
	_ castore.UseRecorder  = (*Store)(nil)
)

// paddedMutex keeps lock stripes on separate cache lines.
type paddedMutex struct {
	sync.Mutex
	_ [64 - 8]byte
}

var errPebbleClosed = errors.New("castore: pebble store is closed")

// Open opens the store in dir for reading and writing, creating dir
// and the database if they do not exist. It refuses with ErrNoSpace when
// the file system has less free space than a write needs (see
// Options.MinFreeBytes): opening replays and flushes the write-ahead
// log, which a full disk would make Pebble retry for ever.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("castore: pebble: %w", err)
	}
	var space *spaceGuard
	if !opts.NoSpaceGuard {
		reserve, why := opts.reserve()
		space = &spaceGuard{dir: dir, reserve: reserve, why: why}
		if err := space.admit(0); err != nil {
			return nil, fmt.Errorf("castore: pebble: open %s: %w", dir, err)
		}
	}
	return openPebble(dir, opts, newStoreFS(false, pebbleLogger), space)
}

// OpenReadOnly opens the existing store in dir for reading only. It
// creates and changes nothing: a missing dir, or one without a database,
// is an error (wrapping fs.ErrNotExist), and so is a store another process
// has open for writing. Write methods fail with ErrInvalid. The unflushed
// writes of the write-ahead log are replayed into memory.
func OpenReadOnly(dir string, opts Options) (*Store, error) {
	opts = opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("castore: pebble: no store at %s: %w", dir, err)
	case err != nil:
		return nil, fmt.Errorf("castore: pebble: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("castore: pebble: no store at %s: not a directory", dir)
	}
	desc, err := pebble.Peek(dir, vfs.Default)
	if err != nil {
		return nil, fmt.Errorf("castore: pebble: no store at %s: %w", dir, err)
	}
	if !desc.Exists {
		return nil, fmt.Errorf("castore: pebble: no store at %s: the directory holds no database: %w", dir, fs.ErrNotExist)
	}
	return openPebble(dir, opts, newStoreFS(true, pebbleLogger), nil)
}

// openPebble opens the database in dir on fsys.
func openPebble(dir string, opts Options, fsys *storeFS, space *spaceGuard) (*Store, error) {
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	db, err := pebble.Open(dir, opts.pebbleOptions(cache, fsys))
	if err != nil {
		if lerr := lockedError(dir, err); lerr != nil {
			return nil, lerr
		}
		return nil, fmt.Errorf("castore: pebble: open %s: %w", dir, err)
	}
	if !fsys.readOnly {
		recordOwner(dir)
	}
	// Half a memtable: the queued chunks' inline values (at most as
	// large) stay in memory until the packer has read them.
	maxPackLag := max(int64(opts.MemTableSize)/2, int64(4*opts.Frames.Size))
	return openStore(dir, opts, &pebbleKV{db: db, dir: dir, cacheSize: opts.CacheSize}, fsys, space, maxPackLag)
}

// openStore opens a Store on the database db, which it closes on failure.
func openStore(dir string, opts Options, db kvDB, fsys *storeFS, space *spaceGuard, maxPackLag int64) (*Store, error) {
	ctx := context.Background()
	if err := checkLayoutVersion(ctx, db, fsys.readOnly); err != nil {
		db.close()
		return nil, err
	}
	if !opts.CopyTarget {
		if err := checkComplete(ctx, db, dir); err != nil {
			db.close()
			return nil, err
		}
	}
	s := &Store{
		dir:        dir,
		db:         db,
		stripes:    make([]paddedMutex, opts.LockStripes),
		fs:         fsys,
		space:      space,
		readOnly:   fsys.readOnly,
		objects:    opts.Objects,
		frameOpts:  opts.Frames,
		cache:      newFrameCache(opts.Frames.CacheSize),
		maxPackLag: maxPackLag,
	}
	s.recordUses = opts.RecordUses
	if s.objects == nil {
		s.objects = &DirObjects{dir: filepath.Join(dir, "frames"), space: space}
	}
	if err := s.loadQueue(ctx, db); err != nil {
		db.close()
		return nil, err
	}
	if !s.readOnly && opts.Frames.DecodedCacheSize > 0 {
		decodedDir := opts.Frames.DecodedCacheDir
		if decodedDir == "" {
			decodedDir = filepath.Join(dir, "decoded")
		}
		decoded, err := openDecodedCache(decodedDir, opts.Frames.DecodedCacheSize, s.space.admit)
		if err != nil {
			db.close()
			return nil, err
		}
		s.decoded = decoded
	}
	switch _, local := db.(*pebbleKV); {
	case s.readOnly:
	case local:
		s.places = newPlaceCache(placeCacheEntries)
	case s.decoded != nil:
		s.places = newPlaceHandoff(placeHandoffEntries)
	}
	if !s.readOnly {
		if err := s.sweepFrames(ctx, db); err != nil {
			s.decoded.close()
			db.close()
			return nil, fmt.Errorf("castore: pebble: open %s: %w", dir, err)
		}
		if !s.frameOpts.Off {
			s.startPacker()
		}
	}
	return s, nil
}

// checkLayoutVersion checks the layout version of the database db,
// recording it in a new database unless readOnly.
func checkLayoutVersion(ctx context.Context, db kvDB, readOnly bool) error {
	got, found, err := readLayoutVersion(ctx, db.get, db)
	if err != nil {
		return err
	}
	if !found {
		it, err := db.newIter(ctx, nil, nil)
		if err != nil {
			return fmt.Errorf("open %s: %w", db.name(), err)
		}
		empty := !it.First()
		if err := it.Close(); err != nil {
			return fmt.Errorf("open %s: %w", db.name(), err)
		}
		if !empty {
			return fmt.Errorf("%w: %s has data but no layout version", castore.ErrCorrupt, db.name())
		}
		if readOnly {
			return nil
		}
		if err := db.set(ctx, pebbleVersionKey, binary.AppendUvarint(nil, layoutFrames), true); err != nil {
			return fmt.Errorf("open %s: %w", db.name(), err)
		}
		return nil
	}
	if got < layoutFrames && !readOnly {
		if err := db.set(ctx, pebbleVersionKey, binary.AppendUvarint(nil, layoutFrames), true); err != nil {
			return fmt.Errorf("open %s: %w", db.name(), err)
		}
	}
	return nil
}

// readLayoutVersion reads the layout version of db with get (db's, or a
// batch's, which locks the record on a shared database). found is false
// when no version is recorded. A version above pebbleLayoutVersion is
// refused (ErrInvalid), as is a record that is not a version
// (ErrCorrupt).
func readLayoutVersion(ctx context.Context, get func(context.Context, []byte, func([]byte) error) error, db kvDB) (v uint64, found bool, err error) {
	err = get(ctx, pebbleVersionKey, func(b []byte) error {
		x, n := binary.Uvarint(b)
		if n != len(b) || x < 1 {
			return fmt.Errorf("%w: %s: layout version record %x is not a version", castore.ErrCorrupt, db.name(), b)
		}
		v = x
		return nil
	})
	switch {
	case errors.Is(err, errNoKey):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case v > pebbleLayoutVersion:
		return v, true, newerLayoutError(db, v)
	}
	return v, true, nil
}

// newerLayoutError is the refusal of a store whose layout version v is
// above this binary's.
func newerLayoutError(db kvDB, v uint64) error {
	return fmt.Errorf("%w: %s: store layout version %d is newer than this binary (%d): open it with a newer nixcas",
		castore.ErrInvalid, db.name(), v, pebbleLayoutVersion)
}

// requireLayout raises the store's layout version to at least v (synced)
// before records that need it are written; a store already at v or above
// is left as it is. The version is read and raised in one batch, whose
// read locks it on a shared database, so a version another process raised
// meanwhile is never lowered. A version above this binary's, recorded or
// asked for, is refused.
func requireLayout(ctx context.Context, db kvDB, v uint64) error {
	if v > pebbleLayoutVersion {
		return newerLayoutError(db, v)
	}
	b := db.newBatch()
	defer b.close()
	got, _, err := readLayoutVersion(ctx, b.get, db)
	if err != nil {
		return err
	}
	if got >= v {
		return nil
	}
	b.set(pebbleVersionKey, binary.AppendUvarint(nil, v))
	if err := b.commit(ctx, true); err != nil {
		return fmt.Errorf("castore: raising the layout version of %s to %d: %w", db.name(), v, err)
	}
	return nil
}

// checkSharedLayout re-reads the layout version of a shared database at
// most once every layoutRecheck (a process of a newer binary may have
// raised it since this store opened), and from then on refuses every
// operation if it is above this binary's. A database of one process
// returns at once: its version changes only through this store.
func (s *Store) checkSharedLayout(ctx context.Context, db kvDB) error {
	if !db.shared() {
		return nil
	}
	if e := s.layoutErr.Load(); e != nil {
		return *e
	}
	now := time.Now().UnixNano()
	last := s.layoutChecked.Load()
	if now-last < int64(layoutRecheck) || !s.layoutChecked.CompareAndSwap(last, now) {
		return nil
	}
	return s.recheckLayout(ctx, db)
}

// recheckLayout reads the layout version of s's database again, and
// refuses every later operation if it is above this binary's.
func (s *Store) recheckLayout(ctx context.Context, db kvDB) error {
	_, _, err := readLayoutVersion(ctx, db.get, db)
	if errors.Is(err, castore.ErrInvalid) {
		s.layoutErr.CompareAndSwap(nil, &err)
	}
	return err
}

// layoutRecheck is how often a store on a shared database reads its
// layout version again (checkSharedLayout): for that long after a newer
// binary raised it, this one may still write records of its own layout.
// A collection reads it when it starts, and an incremental compaction
// when it raises it (requireLayout).
const layoutRecheck = 10 * time.Second

// Dir returns the store's data directory.
func (s *Store) Dir() string { return s.dir }

// DecodedCacheStats describes the store's cache of decoded frames on disk.
// A store that keeps none (read-only, or with the cache off) counts the
// files a writable store left in DATA/decoded, and nothing else.
func (s *Store) DecodedCacheStats() DecodedCacheStats {
	if s.decoded != nil {
		return s.decoded.stats()
	}
	return decodedFilesIn(filepath.Join(s.dir, "decoded"))
}

// acquire holds s.mu for reading and returns the database, or an error
// once the store is closed. The caller calls s.mu.RUnlock.
func (s *Store) acquire(ctx context.Context) (kvDB, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.db == nil {
		s.mu.RUnlock()
		return nil, errPebbleClosed
	}
	if err := s.checkSharedLayout(ctx, s.db); err != nil {
		s.mu.RUnlock()
		return nil, err
	}
	return s.db, nil
}

// acquireWrite is acquire for a write: it fails on a read-only store.
// Before committing n bytes, the writer asks s.space.admit(n).
func (s *Store) acquireWrite(ctx context.Context) (kvDB, error) {
	if s.readOnly {
		return nil, fmt.Errorf("%w: store %s is open read-only", castore.ErrInvalid, s.dir)
	}
	return s.acquire(ctx)
}

// acquireFor is acquire for a run that writes unless dryRun.
func (s *Store) acquireFor(ctx context.Context, dryRun bool) (kvDB, error) {
	if dryRun {
		return s.acquire(ctx)
	}
	return s.acquireWrite(ctx)
}

// stripe returns the mutex that serializes puts of d.
func (s *Store) stripe(d castore.Digest) *sync.Mutex {
	i := binary.LittleEndian.Uint32(d[:4]) & uint32(len(s.stripes)-1)
	return &s.stripes[i].Mutex
}

func pebbleKey(kind byte, d castore.Digest) []byte {
	k := make([]byte, 1+castore.DigestSize)
	k[0] = kind
	copy(k[1:], d[:])
	return k
}

// has reports whether key exists (see kvDB.has).
func has(ctx context.Context, db kvDB, key []byte) (bool, error) {
	return db.has(ctx, key)
}

// pebbleError wraps an error from Pebble, as ErrCorrupt when Pebble found
// damaged data (a checksum mismatch, say).
func pebbleError(err error, what string) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("%w: pebble: %s: %v", castore.ErrCorrupt, what, err)
	}
	return fmt.Errorf("castore: pebble: %s: %w", what, err)
}

// get calls fn with the value of key, valid only during the call; a
// missing key is errNoKey. what names the record in errors.
func get(ctx context.Context, db kvDB, key []byte, what string, fn func(v []byte) error) error {
	err := db.get(ctx, key, fn)
	if err != nil && !errors.Is(err, errNoKey) && !errors.Is(err, castore.ErrCorrupt) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return err
}

// HasChunk implements ChunkStore. It does not read the chunk's value.
func (s *Store) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	return s.useChunk(ctx, db, d)
}

// GetChunk implements ChunkStore. An inline chunk is decoded straight from
// Pebble's buffer into dst; a chunk in a frame is copied out of the decoded
// frame (see frames.go).
func (s *Store) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return dst, err
	}
	defer s.mu.RUnlock()
	return s.getChunk(ctx, db, d, dst)
}

// getChunk is GetChunk on an acquired db.
func (s *Store) getChunk(ctx context.Context, db kvDB, d castore.Digest, dst []byte) ([]byte, error) {
	r, ok := s.places.lookup(d)
	if !ok {
		r, ok = s.places.take(d) // left by ChunkFiles
	}
	if ok {
		if out, err := s.readChunkInFrame(ctx, d, r, dst); err == nil {
			return out, nil
		}
		// Its frame retired meanwhile, or damaged: ask the index.
		s.places.forget(d)
	}
	for attempt := 0; ; attempt++ {
		out := dst
		gen := s.places.generation()
		ref, framed, err := lookupChunk(ctx, db, d, func(v []byte) (err error) {
			if out, err = castore.DecodeChunk(dst, v); err != nil {
				return fmt.Errorf("%w (chunk %s)", err, d)
			}
			return nil
		})
		switch {
		case errors.Is(err, errNoKey):
			return dst, fmt.Errorf("%w: chunk %s", castore.ErrNotFound, d)
		case err != nil:
			return dst, err
		case !framed:
			return out, nil
		}
		out, err = s.readChunkInFrame(ctx, d, ref, dst)
		if errors.Is(err, errFrameMissing) {
			if attempt == 0 {
				continue // compaction may have moved the chunk meanwhile
			}
			return dst, fmt.Errorf("%w: chunk %s: %v", castore.ErrCorrupt, d, err)
		}
		if err != nil {
			return dst, fmt.Errorf("chunk %s: %w", d, err)
		}
		s.places.add(d, ref, gen)
		return out, nil
	}
}

// chunkEncoding is a pooled encoder with its output buffer.
type chunkEncoding struct {
	enc castore.ChunkEncoder
	buf []byte
}

var chunkEncodings = sync.Pool{New: func() any { return new(chunkEncoding) }}

// PutChunk implements ChunkStore. A chunk already stored costs one key
// lookup. Otherwise the chunk is encoded, and then, under the digest's lock
// stripe and only if it is still absent, written together with its
// counters. The write is not synced.
func (s *Store) PutChunk(ctx context.Context, c castore.Chunk) (bool, error) {
	if err := c.Check(); err != nil {
		return false, err
	}
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	if ok, err := s.useChunk(ctx, db, c.Digest()); err != nil || ok {
		return false, err
	}
	// Encode outside the lock: two puts of the same new chunk at once are
	// rare, other chunks sharing the stripe are not.
	e := chunkEncodings.Get().(*chunkEncoding)
	defer func() {
		if cap(e.buf) > 1<<20 {
			e.buf = nil
		}
		chunkEncodings.Put(e)
	}()
	if s.frameOpts.Off {
		e.buf = e.enc.Encode(e.buf[:0], c.Data())
	} else {
		// The packer will compress it with its neighbours soon: lz4 now
		// would cost a sixth of ingest's CPU for bytes that live a few
		// seconds.
		e.buf = append(append(e.buf[:0], castore.CodecRaw), c.Data()...)
	}
	return s.putStoredChunk(ctx, db, c.Digest(), len(c.Data()), e.buf)
}

// putStoredChunk writes a chunk's stored form, with its queue entry (see
// pack.go) and counters, unless it is already there, under the digest's
// lock stripe so that a chunk is stored and counted once, if space admits
// it. The write is not synced.
func (s *Store) putStoredChunk(ctx context.Context, db kvDB, d castore.Digest, size int, stored []byte) (bool, error) {
	if err := s.waitForPacker(ctx); err != nil {
		return false, err
	}
	key := pebbleKey(pebbleKindChunk, d)
	if err := s.space.admit(len(key) + len(stored) + 48); err != nil {
		return false, err
	}
	mu := s.stripe(d)
	mu.Lock()
	defer mu.Unlock()
	// On a shared database the caller's lookup (useChunk) was just made,
	// and the insert below fails, storing nothing, should the chunk have
	// been stored since: a second lookup would cost a round trip for
	// nothing.
	if !db.shared() {
		if ok, err := has(ctx, db, key); err != nil || ok {
			return false, err
		}
	}
	var delta [numCounters]uint64
	delta[counterUniqueChunkBytes] = uint64(size)
	delta[counterStoredBytes] = uint64(len(stored))
	delta[counterChunks] = 1
	b := db.newBatch()
	defer b.close()
	b.insert(key, stored)
	if !s.frameOpts.Off {
		seq, err := db.nextSeq(ctx)
		if err != nil {
			return false, fmt.Errorf("put chunk %s: %w", d, err)
		}
		b.set(queueKey(seq), queueValue(d, size))
	}
	b.addCounters(delta[:])
	if err := b.commit(ctx, false); errors.Is(err, errKeyExists) {
		return false, nil // stored meanwhile by another process
	} else if err != nil {
		return false, fmt.Errorf("put chunk %s: %w", d, err)
	}
	s.lastWrite.Store(time.Now().UnixNano())
	if !s.frameOpts.Off {
		s.queued.Add(int64(size))
		s.signalPacker()
	}
	return true, nil
}

// GetBlobIndex implements BlobIndexStore.
func (s *Store) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if err := s.useBlob(ctx, db, d, nil, false, nil); err != nil {
		return nil, err
	}
	return s.getBlobIndex(ctx, db, d)
}

// getBlobIndex is GetBlobIndex on an acquired db, recording no use.
func (s *Store) getBlobIndex(ctx context.Context, db kvDB, d castore.Digest) ([]castore.ChunkRef, error) {
	var refs []castore.ChunkRef
	err := get(ctx, db, pebbleKey(pebbleKindBlobIndex, d), "blob index", func(v []byte) (err error) {
		refs, err = decodeBlobIndex(d, v)
		return err
	})
	if errors.Is(err, errNoKey) {
		return nil, fmt.Errorf("%w: blob index %s", castore.ErrNotFound, d)
	}
	if err != nil {
		return nil, err
	}
	return refs, nil
}

// encodeBlobIndex returns the stored form of a blob index.
func encodeBlobIndex(chunks []castore.ChunkRef) []byte {
	b := make([]byte, 0, len(chunks)*blobIndexEntrySize)
	for _, c := range chunks {
		b = append(b, c.Digest[:]...)
		b = binary.LittleEndian.AppendUint32(b, c.Size)
	}
	return b
}

// decodeBlobIndex decodes a stored blob index into a new slice.
func decodeBlobIndex(d castore.Digest, v []byte) ([]castore.ChunkRef, error) {
	if len(v)%blobIndexEntrySize != 0 || len(v) < 2*blobIndexEntrySize {
		return nil, fmt.Errorf("%w: blob index %s: %d bytes", castore.ErrCorrupt, d, len(v))
	}
	refs := make([]castore.ChunkRef, len(v)/blobIndexEntrySize)
	for i := range refs {
		e := v[i*blobIndexEntrySize:]
		copy(refs[i].Digest[:], e[:castore.DigestSize])
		refs[i].Size = binary.LittleEndian.Uint32(e[castore.DigestSize:])
	}
	return refs, nil
}

// PutBlob implements BlobIndexStore. The write is not synced.
func (s *Store) PutBlob(ctx context.Context, d castore.Digest, size uint64, chunks []castore.ChunkRef) error {
	if err := castore.CheckBlobIndex(d, size, chunks); err != nil {
		return err
	}
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	used := chunks
	if used == nil {
		used = []castore.ChunkRef{}
	}
	if err := s.space.admit(len(chunks) * blobIndexEntrySize); err != nil {
		return err
	}
	logical := []uint64{counterLogicalBytes: size}
	if len(chunks) < 2 {
		// No index: the use and the count are one step (one round trip
		// on PostgreSQL).
		b := db.newBatch()
		defer b.close()
		b.addCounters(logical)
		if err := s.useBlob(ctx, db, d, used, true, b); err != nil {
			return fmt.Errorf("put blob %s: %w", d, err)
		}
		return nil
	}
	if err := s.useBlob(ctx, db, d, used, true, nil); err != nil {
		return err
	}
	addLogical := func() error {
		b := db.newBatch()
		defer b.close()
		b.addCounters(logical)
		if err := b.commit(ctx, false); err != nil {
			return fmt.Errorf("put blob %s: %w", d, err)
		}
		return nil
	}
	key := pebbleKey(pebbleKindBlobIndex, d)
	var value []byte
	if ok, err := has(ctx, db, key); err != nil {
		return err
	} else if !ok {
		value = encodeBlobIndex(chunks)
	}
	if value == nil {
		return addLogical()
	}
	mu := s.stripe(d)
	mu.Lock()
	defer mu.Unlock()
	if ok, err := has(ctx, db, key); err != nil {
		return err
	} else if ok {
		return addLogical()
	}
	b := db.newBatch()
	defer b.close()
	b.insert(key, value)
	var delta [counterBlobs + 1]uint64
	delta[counterLogicalBytes] = size
	delta[counterBlobs] = 1
	b.addCounters(delta[:])
	if err := b.commit(ctx, false); errors.Is(err, errKeyExists) {
		return addLogical() // stored meanwhile by another process
	} else if err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	return nil
}

// GetDirectory implements DirectoryStore.
func (s *Store) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if err := s.useDirectory(ctx, db, d, nil, false); err != nil {
		return nil, err
	}
	return s.getDirectory(ctx, db, d)
}

// getDirectory is GetDirectory on an acquired db, recording no use.
func (s *Store) getDirectory(ctx context.Context, db kvDB, d castore.Digest) (*castore.Directory, error) {
	var dir *castore.Directory
	err := get(ctx, db, pebbleKey(pebbleKindDirectory, d), "directory", func(v []byte) (err error) {
		// The decoded directory copies what it keeps (strings, digests).
		dir, err = castore.DecodeStoredDirectory(d, v)
		return err
	})
	if errors.Is(err, errNoKey) {
		return nil, fmt.Errorf("%w: directory %s", castore.ErrNotFound, d)
	}
	if err != nil {
		return nil, err
	}
	return dir, nil
}

// PutDirectory implements DirectoryStore. The write is not synced.
func (s *Store) PutDirectory(ctx context.Context, dir *castore.Directory) (castore.Digest, error) {
	if err := dir.Validate(); err != nil {
		return castore.Digest{}, err
	}
	b := dir.Marshal()
	d := castore.Hash(b)
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return castore.Digest{}, err
	}
	defer s.mu.RUnlock()
	if err := s.useDirectory(ctx, db, d, dir, true); err != nil {
		return castore.Digest{}, err
	}
	key := pebbleKey(pebbleKindDirectory, d)
	mu := s.stripe(d)
	mu.Lock()
	defer mu.Unlock()
	if ok, err := has(ctx, db, key); err != nil || ok {
		return d, err
	}
	if err := s.space.admit(len(key) + len(b)); err != nil {
		return castore.Digest{}, err
	}
	batch := db.newBatch()
	defer batch.close()
	batch.insert(key, b)
	batch.addCounters([]uint64{counterDirectories: 1})
	if err := batch.commit(ctx, false); err != nil && !errors.Is(err, errKeyExists) {
		return castore.Digest{}, fmt.Errorf("put directory %s: %w", d, err)
	}
	return d, nil
}

// Stats implements Store. The counters are persistent and always agree
// with the data written.
func (s *Store) Stats(ctx context.Context) (castore.Stats, error) {
	db, err := s.acquire(ctx)
	if err != nil {
		return castore.Stats{}, err
	}
	defer s.mu.RUnlock()
	return s.statsOf(ctx, db)
}

// Sync implements Store. It commits an empty, synced batch (a LogData
// record): the write-ahead log is synced in order, so every write that
// returned before Sync was called is durable when it returns. Unlike a
// memtable flush this costs one fsync. On a read-only store it does
// nothing.
func (s *Store) Sync(ctx context.Context) error {
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if s.readOnly {
		return nil
	}
	if err := db.sync(ctx); err != nil {
		return err
	}
	return nil
}

// Close implements Store. It stops the packer and packs the full frames'
// worth of chunks still queued, waits for operations in progress, flushes
// the memtable when there is room for it (so that the write-ahead log it
// replaces is deleted and the next open replays nothing), then closes the
// database, which syncs the write-ahead log. Obsolete logs are deleted,
// not kept for reuse, so the directory holds what the data needs. It is
// safe to call twice; other methods fail once the store is closed.
func (s *Store) Close() error {
	if s.stopPacker() {
		// Pack the full frames the packer had not reached, so that a
		// short-lived process leaves at most one frame's worth unpacked.
		// A failure leaves them queued, as they were.
		for s.queued.Load() >= int64(s.frameOpts.Size) {
			if packed, err := s.packOne(context.Background(), false); err != nil || !packed {
				break
			}
		}
	}
	// Decoded frames still queued are written (they are whole, so the next
	// process reads them).
	s.decoded.close()
	// A collection in progress finishes first, and none starts meanwhile
	// (it reads under s.mu, which must not wait behind Close).
	s.gcRunning.Lock()
	defer s.gcRunning.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	var err error
	if p, ok := s.db.(*pebbleKV); ok && !s.readOnly {
		if wal := p.db.Metrics().WAL.Size; wal > 0 && s.roomToFlush(wal) {
			if ferr := p.db.Flush(); ferr != nil {
				err = pebbleError(ferr, "flush before close")
			}
		}
	}
	// Writes that wait for space (other than the log's) give up now.
	close(s.fs.closing)
	if cerr := s.db.close(); cerr != nil && err == nil {
		err = fmt.Errorf("castore: close: %w", cerr)
	}
	s.db = nil
	return err
}

// roomToFlush reports whether the disk has room to flush a memtable
// written to a log of wal bytes, with the reserve to spare: a flush that
// met a full disk would wait for space.
func (s *Store) roomToFlush(wal uint64) bool {
	if s.space != nil {
		return s.space.admit(int(wal)) == nil
	}
	avail, err := availableBytes(s.dir)
	return err == nil && avail >= 2*wal
}

// Flush packs every queued chunk into frames (PackPending), writes the
// memtable out to sstables (and blob files) and waits until that and the
// compactions in progress are done. Stores do not need it; it is for tools
// and tests that look at the files or measure a store at rest. On a
// read-only store it does nothing.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.PackPending(ctx); err != nil {
		return err
	}
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	p, ok := db.(*pebbleKV)
	if s.readOnly || !ok {
		return nil
	}
	if err := p.db.Flush(); err != nil {
		return pebbleError(err, "flush")
	}
	// Let the compactions the flush set off finish, so that what follows
	// meets a store at rest.
	for p.db.Metrics().Compact.NumInProgress > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// DiskBytes returns the space allocated to the data directory, as du
// counts it (allocated blocks, not file sizes): sstables, blob files,
// write-ahead logs and Pebble's own bookkeeping. Files removed while it
// runs (compactions do) are skipped.
func (s *Store) DiskBytes() (int64, error) {
	return diskUsage(s.dir)
}

// checkMetaKind refuses the kinds the store keeps itself.
func checkMetaKind(kind byte) error {
	switch kind {
	case pebbleKindChunk, pebbleKindBlobIndex, pebbleKindDirectory, pebbleKindMeta, pebbleKindQueue, pebbleKindFrame, pebbleKindUse:
		return fmt.Errorf("%w: key kind %q belongs to castore", castore.ErrInvalid, kind)
	}
	return nil
}

// GetMeta returns a copy of the value of kind and key; a missing key is
// ErrNotFound.
func (s *Store) GetMeta(ctx context.Context, kind byte, key []byte) ([]byte, error) {
	if err := checkMetaKind(kind); err != nil {
		return nil, err
	}
	db, err := s.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	var value []byte
	err = get(ctx, db, append([]byte{kind}, key...), "meta record", func(v []byte) error {
		value = bytes.Clone(v)
		return nil
	})
	if errors.Is(err, errNoKey) {
		return nil, fmt.Errorf("%w: %c/%x", castore.ErrNotFound, kind, key)
	}
	if err != nil {
		return nil, err
	}
	return value, nil
}

// SetMeta applies records atomically: all or none are written. Like every
// write it is not synced; call Sync before relying on it.
func (s *Store) SetMeta(ctx context.Context, records ...castore.MetaRecord) error {
	for _, r := range records {
		if err := checkMetaKind(r.Kind); err != nil {
			return err
		}
	}
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	n := 0
	for _, r := range records {
		n += 1 + len(r.Key) + len(r.Value)
	}
	if err := s.space.admit(n); err != nil {
		return err
	}
	b := db.newBatch()
	defer b.close()
	var key []byte
	for _, r := range records {
		key = append(append(key[:0], r.Kind), r.Key...)
		if r.Delete {
			b.delete(key)
		} else {
			b.set(key, r.Value)
		}
	}
	if err := b.commit(ctx, false); err != nil {
		return pebbleError(err, "set meta")
	}
	return nil
}

// updateMetaTries bounds how often UpdateMeta starts again after another
// process wrote the record it found absent.
const updateMetaTries = 8

// UpdateMeta reads the record of kind and key (nil when there is none),
// calls fn with a copy of it, and writes the records fn returns in one
// batch, as SetMeta does. On a database several processes share
// (OpenPostgres) the read locks the record until the write commits, and
// a record found absent is written only if it still is (otherwise fn is
// called again with what the other process wrote), so two updates of one
// record, in two processes, never both start from the same value. Within
// one process the caller orders its updates of a record itself.
func (s *Store) UpdateMeta(ctx context.Context, kind byte, key []byte, fn func(old []byte) ([]castore.MetaRecord, error)) error {
	if err := checkMetaKind(kind); err != nil {
		return err
	}
	db, err := s.acquireWrite(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	full := append([]byte{kind}, key...)
	for range updateMetaTries {
		err := s.updateMeta(ctx, db, full, fn)
		if !errors.Is(err, errKeyExists) {
			return err
		}
	}
	return fmt.Errorf("update meta %c/%x: written by other processes %d times while this one tried", kind, key, updateMetaTries)
}

// updateMeta is one try of UpdateMeta on the record full (kind and key).
func (s *Store) updateMeta(ctx context.Context, db kvDB, full []byte, fn func(old []byte) ([]castore.MetaRecord, error)) error {
	b := db.newBatch()
	defer b.close()
	var old []byte
	err := b.get(ctx, full, func(v []byte) error {
		old = bytes.Clone(v)
		return nil
	})
	if err != nil && !errors.Is(err, errNoKey) {
		return pebbleError(err, "update meta")
	}
	records, err := fn(old)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range records {
		if err := checkMetaKind(r.Kind); err != nil {
			return err
		}
		n += 1 + len(r.Key) + len(r.Value)
	}
	if err := s.space.admit(n); err != nil {
		return err
	}
	var k []byte
	for _, r := range records {
		k = append(append(k[:0], r.Kind), r.Key...)
		switch {
		case r.Delete:
			b.delete(k)
		case old == nil && bytes.Equal(k, full):
			b.insert(k, r.Value)
		default:
			b.set(k, r.Value)
		}
	}
	if err := b.commit(ctx, false); err != nil {
		if errors.Is(err, errKeyExists) {
			return err
		}
		return pebbleError(err, "update meta")
	}
	return nil
}

// ScanMeta calls fn for each record of kind whose key starts with prefix,
// in ascending key order, with the key (without the kind byte) and value.
// Both are valid only during the call. It stops at fn's first error and
// returns it.
func (s *Store) ScanMeta(ctx context.Context, kind byte, prefix []byte, fn func(key, value []byte) error) error {
	if err := checkMetaKind(kind); err != nil {
		return err
	}
	db, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer s.mu.RUnlock()
	lower := append([]byte{kind}, prefix...)
	it, err := db.newIter(ctx, lower, prefixEnd(lower))
	if err != nil {
		return pebbleError(err, "scan meta")
	}
	for it.First(); it.Valid(); it.Next() {
		if err = ctx.Err(); err != nil {
			break
		}
		var v []byte
		if v, err = it.ValueAndErr(); err != nil {
			err = pebbleError(err, "scan meta")
			break
		}
		if err = fn(it.Key()[1:], v); err != nil {
			break
		}
	}
	if cerr := it.Close(); err == nil && cerr != nil {
		err = pebbleError(cerr, "scan meta")
	}
	return err
}

// prefixEnd returns the smallest key greater than every key starting with
// p, or nil when there is none (p is all 0xff).
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// encodeCounters encodes a counter vector, dropping trailing zeros.
func encodeCounters(c []uint64) []byte {
	n := len(c)
	for n > 0 && c[n-1] == 0 {
		n--
	}
	b := make([]byte, 8*n)
	for i := range n {
		binary.LittleEndian.PutUint64(b[8*i:], c[i])
	}
	return b
}

// pebbleCounterMerger sums counter vectors element-wise. Its name is
// recorded in the database, which Pebble will not open with another.
var pebbleCounterMerger = &pebble.Merger{
	Name: "nixcas.castore.counters.v1",
	Merge: func(_, value []byte) (pebble.ValueMerger, error) {
		m := new(counterSum)
		if err := m.add(value); err != nil {
			return nil, err
		}
		return m, nil
	},
}

// counterSum is a merge in progress; addition commutes, so operands may
// come in either order.
type counterSum struct{ sum []uint64 }

func (m *counterSum) add(v []byte) error {
	if len(v)%8 != 0 {
		return fmt.Errorf("%w: counter operand of %d bytes", castore.ErrCorrupt, len(v))
	}
	n := len(v) / 8
	if n > len(m.sum) {
		m.sum = append(m.sum, make([]uint64, n-len(m.sum))...)
	}
	for i := range n {
		m.sum[i] += binary.LittleEndian.Uint64(v[8*i:])
	}
	return nil
}

func (m *counterSum) MergeNewer(v []byte) error { return m.add(v) }
func (m *counterSum) MergeOlder(v []byte) error { return m.add(v) }

func (m *counterSum) Finish(bool) ([]byte, io.Closer, error) {
	b := make([]byte, 8*len(m.sum))
	for i, x := range m.sum {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return b, nil, nil
}

// quietPebbleLogger drops Pebble's informational messages (it reports WAL
// recovery on every open) and passes on the rest.
type quietPebbleLogger struct{ pebble.Logger }

func (quietPebbleLogger) Infof(string, ...any) {}
