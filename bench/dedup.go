package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// DedupOptions configure a dedup run.
type DedupOptions struct {
	// Inputs are stored one after the other, as successive versions of a
	// package are.
	Inputs []DedupInput
	// RebuildSim adds this many simulated rebuilds after each input: the
	// same NAR with every store reference given a new hash, as a
	// dependency bump does to everything that depends on it. A NAR without
	// references first gets references written into its files (see
	// planRefs), and is stored in that form too.
	RebuildSim int
	// WorkDir holds the spooled NARs (removed as soon as the compressors
	// are done with them) and the castore stores (see nixcasStores):
	// WorkDir/nixcas-frames (64 KiB chunks, default options: nixcas-frames,
	// nixcas-disk, nixcas-64k-lz4 and nixcas-64k-zstd), WorkDir/nixcas-compact,
	// WorkDir/nixcas-16k and WorkDir/nixcas-256k. The two framed stores
	// also hold a PathInfo per NAR, so `nixcas store compact` works on
	// them. It is created if needed; the stores must not exist yet.
	WorkDir string
	// Frames tune the hot frames of the two framed stores (nixcas-frames
	// and nixcas-compact); zero fields take castore's defaults. Off is
	// ignored.
	Frames pebblestore.FrameOptions
	// Compact tunes the compaction of nixcas-compact: FanOut, FrameSize
	// and Level (zero: castore.DefaultCompactOptions), CacheSize. Order is
	// set by the run. Each compaction is incremental (the new chunks, and
	// the runs they merge with as FanOut says).
	Compact pebblestore.CompactOptions
	// NoCompressors leaves out the strategies that run compressor
	// processes (xz, zstd-19, limit-zstd-long): for tuning the castore
	// strategies, whose figures do not depend on them.
	NoCompressors bool
	// Jobs is how many per-NAR compressor processes (xz, zstd -19) run at
	// once; 0 means GOMAXPROCS. The limit-zstd-long process runs beside
	// them.
	Jobs int
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// DedupInput is one input of a dedup run.
type DedupInput struct {
	Name string
	// Path is a NAR file, or a tree (a directory, file or symlink) that
	// nix-store --dump turns into one.
	Path string
}

// DedupResult is what a dedup run measured. Its JSON form is
// {"inputs":[{"name","narBytes"}],"strategies":[{"name","storedBytes","addedBytes"}]}.
type DedupResult struct {
	// Inputs are the NARs stored, in order: the inputs, each followed by
	// its simulated rebuilds.
	Inputs []DedupInputResult `json:"inputs"`
	// Strategies come in the order of DedupStrategies.
	Strategies []StrategyResult `json:"strategies"`

	Wall       time.Duration `json:"-"` // the whole run
	CPUs       int           `json:"-"` // GOMAXPROCS
	GoCPU      time.Duration `json:"-"` // CPU time of this process during the run
	ChildCPU   time.Duration `json:"-"` // CPU time of the compressor processes
	FlushCPU   time.Duration `json:"-"` // CPU time of this process packing what remained queued in nixcas-frames after each NAR (Flush)
	CompactCPU time.Duration `json:"-"` // CPU time of this process compacting nixcas-compact
	// CompactRewrittenBytes: chunk bytes (uncompressed) the compactions
	// of nixcas-compact rewrote, summed over the series.
	CompactRewrittenBytes uint64   `json:"-"`
	PeakRSS               int64    `json:"-"` // peak resident set of this process (compressors not included), bytes; 0 where unknown
	DiskAllBytes          int64    `json:"-"` // every file of the nixcas-frames store, write-ahead logs included
	Notes                 []string `json:"-"` // what the rebuild simulation did to each input, and store counters that disagreed with the files
	// Frames and Compact are the options the framed stores ran with,
	// defaults filled in.
	Frames  pebblestore.FrameOptions   `json:"-"`
	Compact pebblestore.CompactOptions `json:"-"`
}

// DedupInputResult is one NAR of a run.
type DedupInputResult struct {
	Name     string `json:"name"`
	NARBytes int64  `json:"narBytes"`
}

// StrategyResult is one strategy's figures.
type StrategyResult struct {
	Name string `json:"name"`
	// StoredBytes is what the strategy stores for all inputs together.
	StoredBytes int64 `json:"storedBytes"`
	// AddedBytes[i] is what storing input i added.
	AddedBytes []int64 `json:"addedBytes"`

	// MetaBytes is what the strategy needs besides StoredBytes and does not
	// count in it (directories and blob indexes, or NAR chunk lists), or
	// -1 when not applicable.
	MetaBytes int64 `json:"-"`
	// Time is the processing time over all inputs: CPU time of the
	// compressor process when CPUTime is set; otherwise wall time the
	// strategy spent working (not waiting for its input), while sharing
	// the CPUs with every other strategy.
	Time    time.Duration `json:"-"`
	CPUTime bool          `json:"-"`
}

// Strategy returns the result of the named strategy, or nil.
func (r *DedupResult) Strategy(name string) *StrategyResult {
	for i := range r.Strategies {
		if r.Strategies[i].Name == name {
			return &r.Strategies[i]
		}
	}
	return nil
}

// RawBytes returns the total size of the NARs.
func (r *DedupResult) RawBytes() int64 {
	var n int64
	for _, in := range r.Inputs {
		n += in.NARBytes
	}
	return n
}

// The file-granular castore stores, each a pebblestore.Store in its own
// directory under WorkDir. nixcas-frames has the default options and is
// the one measured on disk (nixcas-disk) and sized per chunk
// (nixcas-64k-lz4, nixcas-64k-zstd); nixcas-compact holds the same data
// and is compacted after each NAR; the 16 and 256 KiB stores keep every
// chunk inline, lz4 (frames off). Those that are only counted get a
// smaller cache and memtables: options do not change what a store holds,
// only how much memory it takes to write it.
var nixcasStores = [4]struct {
	name    string // the strategy whose stored bytes are the store's Stats.StoredBytes
	dir     string
	avg     int  // average chunk size
	framed  bool // frames on (DedupOptions.Frames), a PathInfo per NAR
	counted bool
}{
	{StrategyNixcas16kLZ4, "nixcas-16k", 16 << 10, false, true},
	{StrategyNixcasFrames, "nixcas-frames", 64 << 10, true, false},
	{StrategyNixcas256kLZ4, "nixcas-256k", 256 << 10, false, true},
	{StrategyNixcasCompact, "nixcas-compact", 64 << 10, true, true},
}

// Indexes in nixcasStores.
const (
	framesStore  = 1 // nixcas-frames, nixcas-disk, nixcas-64k-lz4, nixcas-64k-zstd
	compactStore = 3 // nixcas-compact
)

// storeOptions returns the Pebble options of store i of nixcasStores.
func (d *dedupRun) storeOptions(i int) pebblestore.Options {
	var o pebblestore.Options
	if nixcasStores[i].counted {
		o = pebblestore.Options{CacheSize: 8 << 20, MemTableSize: 16 << 20}
	}
	if nixcasStores[i].framed {
		o.Frames = d.o.Frames
		o.Frames.Off = false
	} else {
		o.Frames.Off = true
	}
	return o
}

// Compressor command lines. xz runs single-threaded: that is how Nix
// compresses NARs (libarchive, preset 6) unless parallel compression is
// configured, and xz -T0 splits its input into blocks that compress worse.
// Parallelism comes from running several compressors at once instead.
//
// The limit stream runs with --single-thread rather than -T0: with a
// window as large as the whole input, zstd's workers get one job and
// gain nothing, while the input thread races ahead of compression, so the
// output could not be split by input; single-threaded, reading waits for
// compression and the output keeps pace with the input.
var (
	xzArgs        = []string{"xz", "-6", "-T1", "-c", "-q"}
	zstd19Args    = []string{"zstd", "-19", "-T1", "-c", "-q"}
	limitZstdArgs = []string{"zstd", "--long=31", "-19", "--single-thread", "-c", "-q"}
)

// Dedup stores every input (and its simulated rebuilds) with every
// strategy of DedupStrategies and reports what each stores. Each NAR is
// read once: one stream is fanned out to the in-process strategies (file
// dedup, NAR-level chunking, castore stores) and spooled to a file in
// WorkDir, which the compressor processes then read at their own pace,
// in parallel with the next NARs. No NAR is held in memory, and the
// stores are on disk: memory stays bounded whatever the inputs.
func Dedup(ctx context.Context, o DedupOptions) (*DedupResult, error) {
	start := time.Now()
	cpu0 := processCPU()
	if len(o.Inputs) == 0 {
		return nil, errors.New("bench: dedup: no inputs")
	}
	if o.RebuildSim < 0 {
		return nil, fmt.Errorf("bench: dedup: negative rebuild count %d", o.RebuildSim)
	}
	d, err := newDedupRun(ctx, o)
	if err != nil {
		return nil, err
	}
	defer d.close()
	ctx = d.ctx
	for i, in := range o.Inputs {
		if err := d.input(ctx, i, in); err != nil {
			return nil, err
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	d.res.Wall = time.Since(start)
	d.res.GoCPU = processCPU() - cpu0
	d.res.PeakRSS = peakRSS()
	return d.res, nil
}

type dedupRun struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	o      DedupOptions
	res    *DedupResult
	zstd   *zstd.Encoder

	files   fileDedup
	cdc     narCDC
	stores  [len(nixcasStores)]*meteredStore
	pebbles [len(nixcasStores)]*pebblestore.Store // the stores' backends; nil while closed
	prev    map[string]int64                      // totals of the in-process strategies after the last pass
	pass    int                                   // index of the next NAR

	jobs    chan compressJob
	workers sync.WaitGroup
	limit   *limitStream

	mu     sync.Mutex // guards res.Strategies' compressor figures, res.ChildCPU and jobErr
	jobErr error
}

func newDedupRun(ctx context.Context, o DedupOptions) (*dedupRun, error) {
	if o.Jobs <= 0 {
		o.Jobs = runtime.GOMAXPROCS(0)
	}
	if o.WorkDir == "" {
		return nil, errors.New("bench: dedup: no work directory")
	}
	o.Frames.Off = false
	o.Frames = pebblestore.Options{Frames: o.Frames}.EnsureDefaults().Frames
	if err := (pebblestore.Options{Frames: o.Frames}).EnsureDefaults().Validate(); err != nil {
		return nil, fmt.Errorf("bench: dedup: frame options: %w", err)
	}
	if o.Compact.FrameSize == 0 {
		o.Compact.FrameSize = pebblestore.DefaultCompactOptions.FrameSize
	}
	if o.Compact.FanOut == 0 {
		o.Compact.FanOut = pebblestore.DefaultCompactOptions.FanOut
	}
	if o.Compact.Level == 0 {
		o.Compact.Level = pebblestore.DefaultCompactOptions.Level
	}
	if o.Compact.CacheSize == 0 {
		o.Compact.CacheSize = pebblestore.DefaultCompactOptions.CacheSize
	}
	if o.Compact.FrameSize < 64<<10 || o.Compact.FrameSize > pebblestore.MaxFrameSize/2 {
		return nil, fmt.Errorf("bench: dedup: cold frame size %d not in [64 KiB, %d MiB]", o.Compact.FrameSize, pebblestore.MaxFrameSize/2>>20)
	}
	if err := os.MkdirAll(filepath.Join(o.WorkDir, "spool"), 0o755); err != nil {
		return nil, err
	}
	for _, c := range nixcasStores {
		if _, err := os.Stat(filepath.Join(o.WorkDir, c.dir)); err == nil {
			return nil, fmt.Errorf("bench: dedup: %s exists; give an empty work directory", filepath.Join(o.WorkDir, c.dir))
		}
	}
	z, err := newChunkZstd()
	if err != nil {
		return nil, err
	}
	nars := len(o.Inputs) * (1 + o.RebuildSim)
	ctx, cancel := context.WithCancel(ctx)
	d := &dedupRun{
		ctx:    ctx,
		cancel: cancel,
		o:      o,
		res:    &DedupResult{Inputs: make([]DedupInputResult, nars), CPUs: runtime.GOMAXPROCS(0), Frames: o.Frames, Compact: o.Compact},
		zstd:   z,
		cdc:    narCDC{opts: castore.DefaultChunkerOptions, zstd: z},
		prev:   make(map[string]int64),
		jobs:   make(chan compressJob, 2*nars),
	}
	for _, s := range DedupStrategies {
		if o.NoCompressors && isCompressorStrategy(s.Name) {
			continue
		}
		d.res.Strategies = append(d.res.Strategies, StrategyResult{Name: s.Name, AddedBytes: make([]int64, nars), MetaBytes: -1})
	}
	for i := range nixcasStores {
		if i == framesStore {
			d.stores[i] = newMeteredStore(nil, true, z)
		} else {
			d.stores[i] = newMeteredStore(nil, false, nil)
		}
	}
	if !o.NoCompressors {
		if d.limit, err = startLimitStream(ctx, nars); err != nil {
			cancel()
			z.Close()
			return nil, err
		}
	}
	for range o.Jobs {
		d.workers.Add(1)
		go d.work(ctx, d.jobs)
	}
	return d, nil
}

func (d *dedupRun) logf(format string, args ...any) {
	if d.o.Log != nil {
		fmt.Fprintf(d.o.Log, "dedup: "+format+"\n", args...)
	}
}

// close stops whatever is still running (after an error) and releases
// the stores. It is safe to call after finish.
func (d *dedupRun) close() {
	d.cancel()
	if d.jobs != nil {
		close(d.jobs)
		d.jobs = nil
	}
	d.workers.Wait()
	d.limit.abort()
	for i, p := range d.pebbles {
		if p != nil {
			p.Close()
			d.pebbles[i] = nil
		}
	}
	d.zstd.Close()
}

// input stores one input and its simulated rebuilds.
func (d *dedupRun) input(ctx context.Context, i int, in DedupInput) error {
	isNAR, err := isNARFile(in.Path)
	if err != nil {
		return err
	}
	if d.o.RebuildSim == 0 {
		src, wait, err := openNAR(ctx, in.Path, isNAR)
		if err != nil {
			return err
		}
		err = d.store(ctx, in.Name, in.Name, src)
		if werr := wait(); err == nil {
			err = werr
		}
		if err != nil {
			return fmt.Errorf("bench: dedup: %s: %w", in.Name, err)
		}
		return nil
	}

	// The rebuild simulation reads the NAR several times: dump a tree
	// once, finding its references on the way.
	path := in.Path
	var plan refPlan
	if isNAR {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		plan, err = planRefs(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("bench: dedup: %s: %w", path, err)
		}
	} else {
		path = filepath.Join(d.o.WorkDir, fmt.Sprintf("source-%03d.nar", i))
		if plan, err = dumpAndPlan(ctx, in.Path, path); err != nil {
			return fmt.Errorf("bench: dedup: %s: %w", in.Path, err)
		}
		defer os.Remove(path)
	}
	note := fmt.Sprintf("%s: %d store references", in.Name, plan.Refs)
	if plan.Refs == 0 {
		note = fmt.Sprintf("%s: no store references; %d injected (an eighth into each file of %d bytes or more, then one per further MiB)", in.Name, len(plan.Inject), minInjectSize())
	}
	d.res.Notes = append(d.res.Notes, note)
	d.logf("%s", note)
	for v := 0; v <= d.o.RebuildSim; v++ {
		name := in.Name
		switch {
		case v > 0:
			name = fmt.Sprintf("%s+rebuild%d", in.Name, v)
		case len(plan.Inject) > 0:
			name += "+refs"
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = d.store(ctx, in.Name, name, newRefRewriter(f, plan.Inject, v))
		f.Close()
		if err != nil {
			return fmt.Errorf("bench: dedup: %s: %w", name, err)
		}
	}
	return nil
}

// passConsumer is one in-process reader of a NAR stream.
type passConsumer struct {
	name       string
	strategies []string // the strategies whose Time its busy time counts in
	run        func(r io.Reader) error
	busy       time.Duration
}

// store runs one NAR stream through every strategy: the in-process ones
// read it together from a fanout, one of them spooling it to a file that
// the compressor jobs and the limit stream get once the pass is over.
// name is the NAR's name in the results, pkg the name of its input, which
// the framed stores record it under (see benchPathInfo).
func (d *dedupRun) store(ctx context.Context, pkg, name string, src io.Reader) error {
	k := d.pass
	d.pass++
	d.res.Inputs[k].Name = name
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sp := &spool{path: filepath.Join(d.o.WorkDir, "spool", fmt.Sprintf("%03d.nar", k))}
	var spoolFile *os.File
	if !d.o.NoCompressors {
		var err error
		if spoolFile, err = os.Create(sp.path); err != nil {
			return err
		}
		defer spoolFile.Close()
	}
	for i, c := range nixcasStores {
		if d.pebbles[i] == nil {
			var err error
			if d.pebbles[i], err = pebblestore.Open(filepath.Join(d.o.WorkDir, c.dir), d.storeOptions(i)); err != nil {
				return err
			}
			d.stores[i].Store = d.pebbles[i]
		}
	}

	var narBytes, ingested int64
	cs := []*passConsumer{
		{name: "spool", run: func(r io.Reader) error {
			var dst io.Writer = io.Discard
			if spoolFile != nil {
				dst = spoolFile
			}
			n, err := io.Copy(dst, r)
			narBytes = n
			return err
		}},
		{name: "file-dedup", strategies: []string{StrategyFileDedup}, run: d.files.consume},
		{name: "nar-cdc-64k", strategies: []string{StrategyNARCDCZstd, StrategyNARCDCLZ4}, run: d.cdc.consume},
	}
	for i, c := range nixcasStores {
		strategies := []string{c.name}
		if i == framesStore {
			strategies = append(strategies, StrategyNixcasDisk, StrategyNixcas64kLZ4, StrategyNixcas64kZstd)
		}
		s, p, opts := d.stores[i], d.pebbles[i], castore.WriterOptions{Chunker: castore.ChunkerOptions{AvgSize: c.avg}}
		cs = append(cs, &passConsumer{name: c.dir, strategies: strategies, run: func(r io.Reader) error {
			res, err := narrender.Ingest(ctx, r, s, opts)
			if err != nil {
				return err
			}
			if i == framesStore {
				ingested = int64(res.NARSize)
			}
			if c.framed {
				return store.NewIndex(p, p).Put(ctx, benchPathInfo(pkg, res))
			}
			return nil
		}})
	}

	fo := newFanout(ctx, src, len(cs), 1<<20, 32)
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := fo.readers[i]
			t := time.Now()
			err := c.run(r)
			c.busy = time.Since(t) - r.waited
			r.Close()
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", c.name, err)
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the failure itself, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if spoolFile != nil {
		if err := spoolFile.Close(); err != nil {
			return err
		}
	}
	if narBytes != ingested {
		return fmt.Errorf("spooled %d bytes, but the NAR is %d", narBytes, ingested)
	}
	passTime := time.Since(start)
	d.res.Inputs[k].NARBytes = narBytes

	// Hand the NAR to the compressors before measuring the stores.
	if !d.o.NoCompressors {
		sp.refs.Store(3)
		d.jobs <- compressJob{strategy: StrategyXZ, args: xzArgs, input: k, sp: sp}
		d.jobs <- compressJob{strategy: StrategyZstd19, args: zstd19Args, input: k, sp: sp}
		d.limit.feed <- sp
	}

	totals, err := d.totals(ctx)
	if err != nil {
		return err
	}
	for i := range d.res.Strategies {
		s := &d.res.Strategies[i]
		if t, ok := totals[s.Name]; ok {
			s.AddedBytes[k] = t - d.prev[s.Name]
			s.StoredBytes = t
			d.prev[s.Name] = t
		}
	}
	raw := d.res.Strategy(StrategyRaw)
	raw.AddedBytes[k] = narBytes
	raw.StoredBytes += narBytes

	var busy, added []string
	for _, c := range cs {
		for _, s := range c.strategies {
			d.res.Strategy(s).Time += c.busy
		}
		if c.strategies != nil {
			busy = append(busy, fmt.Sprintf("%s %.1fs (%.0f MB/s)", c.name, c.busy.Seconds(), mbps(narBytes, c.busy)))
		}
	}
	for i := range d.res.Strategies {
		// Only the in-process strategies: compressor jobs update the
		// others concurrently.
		s := &d.res.Strategies[i]
		if _, ok := totals[s.Name]; ok {
			added = append(added, fmt.Sprintf("%s %.1f", s.Name, mb(s.AddedBytes[k])))
		}
	}
	d.logf("[%d/%d] %s: %.1f MB NAR, in-process strategies took %.1f s (%.0f MB/s); busy: %s",
		k+1, len(d.res.Inputs), name, mb(narBytes), passTime.Seconds(), mbps(narBytes, passTime), strings.Join(busy, ", "))
	d.logf("[%d/%d] %s: added MB: %s", k+1, len(d.res.Inputs), name, strings.Join(added, ", "))
	return nil
}

// totals returns the stored bytes of the in-process strategies so far.
// It packs what is still queued in the framed stores (Flush) and compacts
// nixcas-compact, then flushes and closes every castore store (store
// reopens them for the next NAR), measuring nixcas-disk on the closed
// directory.
func (d *dedupRun) totals(ctx context.Context) (map[string]int64, error) {
	t := map[string]int64{
		StrategyFileDedup:     d.files.bytes,
		StrategyNARCDCZstd:    d.cdc.zstdBytes,
		StrategyNARCDCLZ4:     d.cdc.lz4Bytes,
		StrategyNixcas64kLZ4:  d.stores[framesStore].lz4Bytes.Load(),
		StrategyNixcas64kZstd: d.stores[framesStore].zstdBytes.Load(),
	}
	d.res.Strategy(StrategyNARCDCZstd).MetaBytes = d.cdc.refs * blobIndexEntryBytes
	d.res.Strategy(StrategyNARCDCLZ4).MetaBytes = d.cdc.refs * blobIndexEntryBytes
	for i, c := range nixcasStores {
		p := d.pebbles[i]
		start, cpu := time.Now(), processCPU()
		switch i {
		case framesStore:
			if err := p.PackPending(ctx); err != nil {
				return nil, err
			}
			d.res.FlushCPU += processCPU() - cpu
		case compactStore:
			if err := d.compact(ctx, p); err != nil {
				return nil, err
			}
			d.res.CompactCPU += processCPU() - cpu
		}
		if err := p.Flush(ctx); err != nil {
			return nil, err
		}
		d.res.Strategy(c.name).Time += time.Since(start)
		st, err := p.Stats(ctx)
		if err != nil {
			return nil, err
		}
		err = p.Close()
		d.pebbles[i] = nil
		if err != nil {
			return nil, err
		}
		t[c.name] = int64(st.StoredBytes)
		if i == compactStore {
			// After Compact every chunk is in a frame: the frame files
			// are what the store holds. Should the store's counter
			// disagree, the files are measured and the counter noted.
			frames, err := frameFileBytes(filepath.Join(d.o.WorkDir, c.dir))
			if err != nil {
				return nil, err
			}
			if frames != t[c.name] {
				note := fmt.Sprintf("%s after %s: Stats.StoredBytes %d, but its frame files hold %d bytes (counted here)",
					c.name, d.res.Inputs[d.pass-1].Name, st.StoredBytes, frames)
				d.res.Notes = append(d.res.Notes, note)
				d.logf("%s", note)
				t[c.name] = frames
			}
		}
		d.res.Strategy(c.name).MetaBytes = d.stores[i].MetaBytes()
		if i == framesStore {
			for _, name := range []string{StrategyNixcas64kLZ4, StrategyNixcas64kZstd} {
				d.res.Strategy(name).MetaBytes = d.stores[i].MetaBytes()
			}
			data, all, err := pebbleDiskBytes(filepath.Join(d.o.WorkDir, c.dir))
			if err != nil {
				return nil, err
			}
			t[StrategyNixcasDisk] = data
			d.res.DiskAllBytes = all
		}
	}
	return t, nil
}

// compact rewrites every chunk of p into cold frames, in the order
// `nixcas store compact` gives: the versions of each file side by side,
// over every store path recorded so far.
func (d *dedupRun) compact(ctx context.Context, p *pebblestore.Store) error {
	opts := d.o.Compact
	index := store.NewIndex(p, p)
	opts.Order, opts.Neighbourhood = index.CompactionOrder, index.CompactionNeighbourhood
	res, err := p.Compact(ctx, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", StrategyNixcasCompact, err)
	}
	level := -1
	if res.Into != nil {
		level = res.Into.Level
	}
	d.res.CompactRewrittenBytes += res.DecodedBytes
	d.logf("%s: %d chunks (%.1f MB) from %d frames (%d runs merged) and %d inline chunks (%.1f MB stored) into %d frames of %.1f MB at level %d",
		StrategyNixcasCompact, res.Chunks, mb(int64(res.DecodedBytes)), res.FramesIn, len(res.Merged), res.InlineChunks, mb(int64(res.StoredIn)),
		res.FramesOut, mb(int64(res.StoredOut)), level)
	return nil
}

// benchPathInfo returns the PathInfo the framed stores record for a NAR
// of input pkg: a store path named after the input (characters Nix does
// not allow in a name replaced by '-'), its hash part made from the NAR's
// SHA-256, without references. All NARs of an input (its simulated
// rebuilds too) share the name, as versions of a package share theirs
// but for the version, so compaction groups their files.
func benchPathInfo(pkg string, res narrender.Result) *store.PathInfo {
	name := []byte(pkg)
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("+-._?=", c) >= 0) {
			name[i] = '-'
		}
	}
	if len(name) == 0 || name[0] == '.' {
		name = append([]byte("input-"), name...)
	}
	name = name[:min(len(name), 200)]
	sum := sha256.Sum256(append([]byte("nixcas bench dedup\x00"), res.NARSha256[:]...))
	path := nixbase32.EncodeToString(sum[:20]) + "-" + string(name)
	root := res.Root
	root.Name = path
	return &store.PathInfo{Path: path, Root: root, NARSize: res.NARSize, NARSha256: res.NARSha256}
}

// finish waits for the compressors and fills in their figures.
func (d *dedupRun) finish() error {
	close(d.jobs)
	d.jobs = nil
	d.workers.Wait()
	if d.o.NoCompressors {
		return nil
	}
	cum, total, cpu, err := d.limit.finish()
	if err != nil {
		return err
	}
	if d.jobErr != nil {
		return d.jobErr
	}
	l := d.res.Strategy(StrategyLimitZstdLong)
	var prev int64
	for k := range l.AddedBytes {
		c := total
		if k < len(cum)-1 {
			c = cum[k]
		}
		l.AddedBytes[k] = c - prev
		prev = c
	}
	l.StoredBytes, l.Time, l.CPUTime = total, cpu, true
	d.res.ChildCPU += cpu
	d.logf("%s: %.1f MB -> %.1f MB in %.0f s CPU (%.1f MB/s)", StrategyLimitZstdLong,
		mb(d.res.RawBytes()), mb(total), cpu.Seconds(), mbps(d.res.RawBytes(), cpu))
	for _, name := range []string{StrategyXZ, StrategyZstd19} {
		s := d.res.Strategy(name)
		s.CPUTime = true
		for _, a := range s.AddedBytes {
			s.StoredBytes += a
		}
	}
	return nil
}

// compressJob compresses one spooled NAR with one compressor.
type compressJob struct {
	strategy string
	args     []string
	input    int
	sp       *spool
}

func (d *dedupRun) work(ctx context.Context, jobs <-chan compressJob) {
	defer d.workers.Done()
	for j := range jobs {
		d.mu.Lock()
		failed := d.jobErr != nil
		d.mu.Unlock()
		var (
			size int64
			cpu  time.Duration
			err  error
		)
		if !failed {
			size, cpu, err = compressFile(ctx, j.sp.path, j.args)
		}
		j.sp.release()
		d.mu.Lock()
		if err != nil && d.jobErr == nil {
			d.jobErr = fmt.Errorf("bench: dedup: %s of %s: %w", j.strategy, d.res.Inputs[j.input].Name, err)
		}
		s := d.res.Strategy(j.strategy)
		s.AddedBytes[j.input] = size
		s.Time += cpu
		d.res.ChildCPU += cpu
		in := d.res.Inputs[j.input]
		d.mu.Unlock()
		if err == nil && !failed {
			d.logf("%s %s: %.1f MB -> %.1f MB (%.1f%%) in %.1f s CPU (%.1f MB/s)", j.strategy, in.Name,
				mb(in.NARBytes), mb(size), 100*float64(size)/float64(in.NARBytes), cpu.Seconds(), mbps(in.NARBytes, cpu))
		}
	}
}

// compressFile runs a compressor with the file as its standard input and
// returns the size of its output and the CPU time it used.
func compressFile(ctx context.Context, path string, args []string) (int64, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var out countWriter
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, &out, &stderr
	if err := cmd.Run(); err != nil {
		return 0, 0, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out.n.Load(), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// spool is a NAR written to a file for the compressors; the last of them
// to release it removes it.
type spool struct {
	path string
	refs atomic.Int32
}

func (s *spool) release() {
	if s.refs.Add(-1) == 0 {
		os.Remove(s.path)
	}
}

// countWriter counts and discards what is written to it; it may be read
// while written.
type countWriter struct{ n atomic.Int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// limitStream is one zstd --long process compressing every NAR, fed one
// after the other. The size of its output when a NAR has been written to
// it stands for what it stored up to that NAR; zstd's buffers (a block of
// 128 KiB, the pipe, zstd's read buffer) blur that boundary by well under
// a MiB of input.
type limitStream struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    countWriter
	stderr bytes.Buffer
	feed   chan *spool
	done   chan struct{}
	cum    []int64
	err    error
}

func startLimitStream(ctx context.Context, nars int) (*limitStream, error) {
	l := &limitStream{feed: make(chan *spool, nars), done: make(chan struct{})}
	l.cmd = exec.CommandContext(ctx, limitZstdArgs[0], limitZstdArgs[1:]...)
	l.cmd.Stdout, l.cmd.Stderr = &l.out, &l.stderr
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := l.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: dedup: starting %s: %w", strings.Join(limitZstdArgs, " "), err)
	}
	go l.run()
	return l, nil
}

func (l *limitStream) run() {
	defer close(l.done)
	for sp := range l.feed {
		if l.err == nil {
			l.err = l.write(sp.path)
			l.cum = append(l.cum, l.out.n.Load())
		}
		sp.release()
	}
	l.stdin.Close()
	if err := l.cmd.Wait(); err != nil && l.err == nil {
		l.err = fmt.Errorf("bench: dedup: %s: %w: %s", strings.Join(limitZstdArgs, " "), err, bytes.TrimSpace(l.stderr.Bytes()))
	}
}

func (l *limitStream) write(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(l.stdin, f); err != nil {
		return fmt.Errorf("bench: dedup: feeding %s: %w: %s", strings.Join(limitZstdArgs, " "), err, bytes.TrimSpace(l.stderr.Bytes()))
	}
	return nil
}

// finish closes the stream and returns the output size after each NAR,
// the total output size and the CPU time of the process.
func (l *limitStream) finish() (cum []int64, total int64, cpu time.Duration, err error) {
	close(l.feed)
	l.feed = nil
	<-l.done
	if l.err != nil {
		return nil, 0, 0, l.err
	}
	ps := l.cmd.ProcessState
	return l.cum, l.out.n.Load(), ps.UserTime() + ps.SystemTime(), nil
}

// abort ends the stream early, if finish has not run.
func (l *limitStream) abort() {
	if l == nil || l.feed == nil {
		return
	}
	if l.cmd.Process != nil {
		l.cmd.Process.Kill()
	}
	close(l.feed)
	l.feed = nil
	<-l.done
}

// isNARFile reports whether path is a regular file that starts like a NAR.
func isNARFile(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 8+16)
	n, _ := io.ReadFull(f, head)
	return bytes.Equal(head[:n], []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1\x00\x00\x00")), nil
}

// openNAR opens the NAR of an input: the file itself, or nix-store --dump
// of a tree. wait releases it and reports the dump's failure.
func openNAR(ctx context.Context, path string, isNAR bool) (io.Reader, func() error, error) {
	if isNAR {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		return f, f.Close, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(ctx, "nix-store", "--dump", abs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("nix-store --dump %s: %w", abs, err)
	}
	wait := func() error {
		io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("nix-store --dump %s: %w: %s", abs, err, bytes.TrimSpace(stderr.Bytes()))
		}
		return nil
	}
	return out, wait, nil
}

// dumpAndPlan writes the NAR of a tree to dst, planning its references on
// the way.
func dumpAndPlan(ctx context.Context, tree, dst string) (refPlan, error) {
	src, wait, err := openNAR(ctx, tree, false)
	if err != nil {
		return refPlan{}, err
	}
	f, err := os.Create(dst)
	if err != nil {
		wait()
		return refPlan{}, err
	}
	defer f.Close()
	tee := io.TeeReader(src, f)
	plan, err := planRefs(tee)
	if err == nil {
		_, err = io.Copy(io.Discard, tee)
	}
	if werr := wait(); err == nil {
		err = werr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return plan, err
}

// pebbleDiskBytes returns the size of the files of a closed Pebble
// directory that hold data (all regular files but write-ahead logs, *.log,
// and the LOCK file), and the size of all its files.
func pebbleDiskBytes(dir string) (data, all int64, err error) {
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		all += info.Size()
		if name := e.Name(); !strings.HasSuffix(name, ".log") && name != "LOCK" {
			data += info.Size()
		}
		return nil
	})
	return data, all, err
}

// frameFileBytes returns the size of the frame files of a closed
// pebblestore.Store directory (its "frames" subdirectory, see
// pebblestore.DirObjects).
func frameFileBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(filepath.Join(dir, "frames"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

// mb converts bytes to MB (10^6 bytes).
func mb(n int64) float64 { return float64(n) / 1e6 }

// mbps returns a rate in MB/s, 0 for no time.
func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}
