package bench

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// ScaleOptions configure the scale benchmark.
type ScaleOptions struct {
	// Steps are the store sizes measured, in increasing order: the store
	// grows from one to the next.
	Steps []ScaleStep
	// WorkDir holds the store (WORK/scale-store) and the trees of the
	// real NARs (WORK/scale-trees).
	WorkDir string
	// LargeMiB is the size of the large NAR served and of the NAR
	// ingested at each step (default 200).
	LargeMiB int
	// Window is how long each latency or throughput figure is measured
	// (default 3 s).
	Window time.Duration
	// Lookups is the number of chunk lookups timed, present and absent
	// each (default 20000).
	Lookups int
	// IndexCache is the index cache (Pebble's block cache) of the store
	// the bench builds and measures lookups on, in bytes (0: the store's
	// default); Serve is given the same.
	IndexCache int64
	// Serve starts a server on the store in dir (closed) and returns it
	// once it answers HTTP; the command runs `nixcas serve` as a child
	// process, so that start time and RSS are the server's own.
	Serve func(ctx context.Context, dir string, signKey string) (*ScaleServer, error)
	Log   io.Writer
}

// ScaleStep is one store size.
type ScaleStep struct {
	Paths  int `json:"paths"`
	Chunks int `json:"chunks"`
}

// ScaleServer is a running server under measurement.
type ScaleServer struct {
	// HTTP is its base URL, http://HOST:PORT.
	HTTP string
	// PID is its process, for its RSS.
	PID int
	// Start is how long it took from exec to the first answer.
	Start time.Duration
	// Stop stops it and waits for it to exit.
	Stop func() error
}

// ScaleResult is every step's figures.
type ScaleResult struct {
	LargeMiB int               `json:"largeMiB"`
	Steps    []ScaleStepResult `json:"steps"`
}

// ScaleStepResult is what one store size measured. Latencies are in
// microseconds, throughputs in MB/s (10^6 bytes a second).
type ScaleStepResult struct {
	ScaleStep
	BuildSeconds float64 `json:"buildSeconds"`
	// Load is the 1-minute load average when the step's measurements
	// began and ended.
	LoadBefore float64 `json:"loadBefore"`
	LoadAfter  float64 `json:"loadAfter"`

	// NarInfoCold16 is narinfo at 16 connections in the first window
	// after the server starts, its index cache empty; NarInfo1 and
	// NarInfo16 are measured after a warm-up of WarmupSeconds that fills
	// the index cache (see warmIndexCache), as a running server's are.
	NarInfoCold16 Latency `json:"narinfo16connCold"`
	WarmupSeconds float64 `json:"warmupSeconds"`
	NarInfo1      Latency `json:"narinfo1conn"`
	NarInfo16     Latency `json:"narinfo16conn"`

	NARSmallMBps  float64 `json:"narSmallMBps"`
	NARSmallP50us float64 `json:"narSmallP50us"`
	NARMediumMBps float64 `json:"narMediumMBps"`
	NARLargeMBps  float64 `json:"narLargeMBps"`

	IngestMBps float64 `json:"ingestMBps"`
	// Lookup*: HasChunk of chunks in the store and of digests not in it.
	LookupHitNs  float64 `json:"lookupHitNs"`
	LookupMissNs float64 `json:"lookupMissNs"`
	// LookupCacheHitPct: of the index block reads of the timed lookups,
	// the percentage served from the index cache (Pebble's block cache).
	LookupCacheHitPct float64 `json:"lookupCacheHitPct"`

	StartMs    float64 `json:"serverStartMs"`
	RSSKiB     int64   `json:"serverRSSKiB"`
	PeakRSSKiB int64   `json:"serverPeakRSSKiB"`

	// Metadata on disk (sstables; blob files and write-ahead logs not
	// counted) added by the synthetic chunks and paths, per chunk and per
	// path, over the whole store so far.
	MetaBytesPerChunk float64 `json:"metaBytesPerChunk"`
	MetaBytesPerPath  float64 `json:"metaBytesPerPath"`
	DiskBytes         int64   `json:"diskBytes"`
}

// Latency is a latency distribution with its request rate.
type Latency struct {
	Requests int     `json:"requests"`
	P50us    float64 `json:"p50us"`
	P99us    float64 `json:"p99us"`
	RPS      float64 `json:"rps"`
}

// Shape of the synthetic paths: up to scaleSmallFiles files of one chunk
// (1 to 16 KiB), then one file of the path's other chunks (64 KiB each)
// when it has at least two left; references to up to scaleRefs earlier
// paths.
const (
	scaleSmallFiles = 3
	scaleChunkSize  = 64 << 10
	scaleRefs       = 5
	scaleBatchPaths = 1000
	scaleKeyName    = "nixcas-bench-scale-1"
)

// Scale builds a store that grows through o.Steps and measures each size.
func Scale(ctx context.Context, o ScaleOptions) (*ScaleResult, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.LargeMiB <= 0 {
		o.LargeMiB = 200
	}
	if o.Window <= 0 {
		o.Window = 3 * time.Second
	}
	if o.Lookups <= 0 {
		o.Lookups = 20000
	}
	if len(o.Steps) == 0 {
		return nil, errors.New("bench: scale: no steps")
	}
	for i, st := range o.Steps {
		if st.Paths <= 0 || st.Chunks < st.Paths {
			return nil, fmt.Errorf("bench: scale: step %d: want paths > 0 and chunks >= paths, got %d and %d", i, st.Paths, st.Chunks)
		}
		if i > 0 && (st.Paths < o.Steps[i-1].Paths || st.Chunks < o.Steps[i-1].Chunks) {
			return nil, fmt.Errorf("bench: scale: step %d is smaller than the one before", i)
		}
	}
	dir := filepath.Join(o.WorkDir, "scale-store")
	trees := filepath.Join(o.WorkDir, "scale-trees")
	for _, d := range []string{dir, trees} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(trees, 0o755); err != nil {
		return nil, err
	}
	sk, _, err := signature.GenerateKeypair(scaleKeyName, nil)
	if err != nil {
		return nil, err
	}
	keyFile := filepath.Join(o.WorkDir, "scale-key.sec")
	if err := os.WriteFile(keyFile, []byte(sk.String()), 0o600); err != nil {
		return nil, err
	}
	signer, err := store.NewSigner(sk)
	if err != nil {
		return nil, err
	}
	g := &scaleGen{signer: signer, log: o.Log}
	res := &ScaleResult{LargeMiB: o.LargeMiB}
	var served map[string]string // kind -> narinfo hash of the real NARs
	var prev ScaleStep
	var chunkMeta, pathMeta int64
	for i, st := range o.Steps {
		sr := ScaleStepResult{ScaleStep: st}
		s, err := pebblestore.Open(dir, pebblestore.Options{CacheSize: o.IndexCache})
		if err != nil {
			return nil, err
		}
		start := time.Now()
		cm, pm, err := g.grow(ctx, s, prev, st)
		if err != nil {
			s.Close()
			return nil, err
		}
		sr.BuildSeconds = time.Since(start).Seconds()
		chunkMeta += cm
		pathMeta += pm
		sr.MetaBytesPerChunk = float64(chunkMeta) / float64(st.Chunks)
		sr.MetaBytesPerPath = float64(pathMeta) / float64(st.Paths)
		sr.LoadBefore = loadAverage()
		x := store.NewIndex(s, s, store.WithSigner(signer))
		if served == nil {
			if served, err = g.putServed(ctx, s, x, trees, o.LargeMiB); err != nil {
				s.Close()
				return nil, err
			}
		}
		if err := g.measureStore(ctx, s, x, trees, i, o, &sr); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.Flush(ctx); err != nil {
			s.Close()
			return nil, err
		}
		if sr.DiskBytes, err = s.DiskBytes(); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.Close(); err != nil {
			return nil, err
		}
		if err := measureServer(ctx, o, dir, keyFile, st, served, &sr); err != nil {
			return nil, err
		}
		sr.LoadAfter = loadAverage()
		fmt.Fprintf(o.Log, "scale: %d paths, %d chunks: done (load %.2f to %.2f)\n", st.Paths, st.Chunks, sr.LoadBefore, sr.LoadAfter)
		res.Steps = append(res.Steps, sr)
		prev = st
	}
	return res, nil
}

// scaleGen makes the synthetic store's records.
type scaleGen struct {
	signer *store.Signer
	log    io.Writer
}

// scalePathName is the base name of synthetic path i.
func scalePathName(i int) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	sum := sha256.Sum256(append([]byte("nixcas bench scale path\x00"), b[:]...))
	return nixbase32.EncodeToString(sum[:20]) + fmt.Sprintf("-synthetic-%d", i)
}

// scaleChunk is the digest of chunk j of path i.
func scaleChunk(i, j int) castore.Digest {
	var b [17]byte
	b[0] = 'c'
	binary.LittleEndian.PutUint64(b[1:], uint64(i))
	binary.LittleEndian.PutUint64(b[9:], uint64(j))
	return castore.Hash(b[:])
}

// chunksOf is how many chunks path i has in a store of st: the chunks
// spread evenly, the remainder on the first paths.
func chunksOf(st ScaleStep, i int) int {
	n := st.Chunks / st.Paths
	if i < st.Chunks%st.Paths {
		n++
	}
	return n
}

// grow adds the paths and chunks of next that prev lacks: path i keeps
// the chunk count it had in prev (new chunks go to new paths, spread
// evenly over them). It returns the disk bytes the chunk index entries
// and the path records (blob indexes, directories, PathInfos, NAR hash
// records) added.
func (g *scaleGen) grow(ctx context.Context, s *pebblestore.Store, prev, next ScaleStep) (chunkBytes, pathBytes int64, err error) {
	from, to := prev.Paths, next.Paths
	add := ScaleStep{Paths: to - from, Chunks: next.Chunks - prev.Chunks}
	if add.Paths == 0 {
		return 0, 0, nil
	}
	if add.Chunks < add.Paths {
		return 0, 0, fmt.Errorf("bench: scale: %d new paths need at least as many new chunks, got %d", add.Paths, add.Chunks)
	}
	count := func(i int) int { return chunksOf(add, i-from) }
	d0, err := metaDisk(ctx, s)
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(g.log, "scale: writing %d chunk index entries\n", add.Chunks)
	phantom := castore.Hash([]byte("nixcas bench scale phantom frame"))
	err = parallelRanges(ctx, from, to, func(lo, hi int) error {
		var refs []castore.ChunkRef
		for i := lo; i < hi; i++ {
			n := count(i)
			for j := range n {
				refs = append(refs, castore.ChunkRef{Digest: scaleChunk(i, j), Size: scaleChunkSizeOf(i, j, n)})
			}
		}
		return s.PutPhantomChunks(ctx, phantom, refs)
	})
	if err != nil {
		return 0, 0, err
	}
	d1, err := metaDisk(ctx, s)
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(g.log, "scale: writing %d paths\n", add.Paths)
	err = parallelRanges(ctx, from, to, func(lo, hi int) error {
		var recs []castore.MetaRecord
		for i := lo; i < hi; i++ {
			p, err := g.putPath(ctx, s, i, count(i))
			if err != nil {
				return err
			}
			v, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.ToProto())
			if err != nil {
				return err
			}
			d := p.Digest()
			recs = append(recs,
				castore.MetaRecord{Kind: store.KindPathInfo, Key: d[:], Value: v},
				castore.MetaRecord{Kind: store.KindNARHash, Key: p.NARSha256[:], Value: d[:]})
		}
		return s.SetMeta(ctx, recs...)
	})
	if err != nil {
		return 0, 0, err
	}
	d2, err := metaDisk(ctx, s)
	if err != nil {
		return 0, 0, err
	}
	return d1 - d0, d2 - d1, nil
}

// scaleChunkSizeOf is the size of chunk j of a path of n chunks: the
// first scaleSmallFiles are small files of 1 to 16 KiB, the rest 64 KiB
// chunks of one file (a last file of one chunk is a small file too).
func scaleChunkSizeOf(i, j, n int) uint32 {
	if j < scaleSmallFiles || n-scaleSmallFiles < 2 {
		return uint32(1<<10 + (i*7919+j*104729)%(15<<10))
	}
	return scaleChunkSize
}

// putPath writes path i's blob index and directory and returns its
// PathInfo, signed, not yet recorded.
func (g *scaleGen) putPath(ctx context.Context, s *pebblestore.Store, i, n int) (*store.PathInfo, error) {
	dir := &castore.Directory{}
	var narSize uint64 = 512
	var blob []castore.ChunkRef
	var blobSize uint64
	for j := range n {
		size := scaleChunkSizeOf(i, j, n)
		if size != scaleChunkSize {
			dir.Files = append(dir.Files, castore.FileEntry{Name: fmt.Sprintf("file-%d", j), Digest: scaleChunk(i, j), Size: uint64(size)})
		} else {
			blob = append(blob, castore.ChunkRef{Digest: scaleChunk(i, j), Size: size})
			blobSize += uint64(size)
		}
		narSize += uint64(size) + 128
	}
	if len(blob) > 0 {
		var b [9]byte
		b[0] = 'b'
		binary.LittleEndian.PutUint64(b[1:], uint64(i))
		bd := castore.Hash(b[:])
		if err := s.PutBlob(ctx, bd, blobSize, blob); err != nil {
			return nil, err
		}
		dir.Files = append(dir.Files, castore.FileEntry{Name: "lib", Digest: bd, Size: blobSize, Executable: true})
	}
	dd, err := s.PutDirectory(ctx, dir)
	if err != nil {
		return nil, err
	}
	name := scalePathName(i)
	var refs []string
	for k := 1; k <= scaleRefs && i-k*k >= 0; k++ {
		refs = append(refs, scalePathName(i-k*k))
	}
	refs = append(refs, name) // a path usually refers to itself
	slices.Sort(refs)
	refs = slices.Compact(refs)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	p := &store.PathInfo{
		Path:       name,
		Root:       castore.Entry{Name: name, Kind: castore.KindDirectory, Digest: dd, Size: dir.Size()},
		References: refs,
		NARSize:    narSize,
		NARSha256:  sha256.Sum256(append([]byte("nixcas bench scale nar\x00"), b[:]...)),
		Deriver:    scalePathName(-1-i) + ".drv",
	}
	return g.signer.Sign(p), nil
}

// parallelRanges runs fn over [from, to) in ranges of scaleBatchPaths on
// a worker per core, returning the first error.
func parallelRanges(ctx context.Context, from, to int, fn func(lo, hi int) error) error {
	next := make(chan int)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := range next {
				if err := fn(lo, min(lo+scaleBatchPaths, to)); err != nil {
					mu.Lock()
					if ferr == nil {
						ferr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for lo := from; lo < to; lo += scaleBatchPaths {
		mu.Lock()
		failed := ferr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- lo
	}
	close(next)
	wg.Wait()
	if ferr != nil {
		return ferr
	}
	return ctx.Err()
}

// metaDisk flushes s and returns the bytes allocated to its sstables
// (write-ahead logs, frame files and the rest not counted). Blob files
// are not counted either: the synthetic records are all below the value
// separation threshold, and the blob files hold the chunks of the real
// NARs queued for packing, whose deletion once they are packed made the
// metadata of a step come out negative.
func metaDisk(ctx context.Context, s *pebblestore.Store) (int64, error) {
	if err := s.Flush(ctx); err != nil {
		return 0, err
	}
	var total int64
	err := filepath.WalkDir(s.Dir(), func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() || !strings.HasSuffix(path, ".sst") {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

// scaleTree writes a tree of about size bytes into dir: files of up to
// 2 MiB of content that compresses about 2:1 (random 4 KiB blocks, each
// followed by a copy of half of it), different for each seed.
func scaleTree(dir string, size int, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's', 'c', 'a', 'l', 'e'}))
	buf := make([]byte, 2<<20)
	for n := 0; size > 0; n++ {
		m := min(size, len(buf))
		for off := 0; off < m; off += 4096 {
			blk := buf[off:min(off+4096, m)]
			half := len(blk) / 2
			for k := 0; k+8 <= half; k += 8 {
				binary.LittleEndian.PutUint64(blk[k:], rng.Uint64())
			}
			copy(blk[half:], blk[:half])
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%04d", n)), buf[:m], 0o644); err != nil {
			return err
		}
		size -= m
	}
	return nil
}

// marshalJSON writes v to path, indented.
func marshalJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteJSON writes the result to path.
func (r *ScaleResult) WriteJSON(path string) error { return marshalJSON(path, r) }

// loadAverage is the 1-minute load average, 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscan(string(b), &l)
	return l
}

// procStatusKiB reads a "VmRSS"-style field of /proc/PID/status, in KiB.
func procStatusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var v int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &v)
			return v
		}
	}
	return 0
}
