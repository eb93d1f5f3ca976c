package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// GCOptions configure the garbage collection benchmark.
type GCOptions struct {
	// Inputs are stored in order, each as a store path; with RebuildSim,
	// the last one is stored with its references injected and then
	// RebuildSim simulated rebuilds of it (see the dedup benchmark).
	Inputs     []DedupInput
	RebuildSim int
	// Synthetic, when > 0, replaces the inputs with a store of this many
	// chunk index entries (no chunk bytes) of which half are reachable
	// from one store path, to measure marking and sweeping alone.
	Synthetic int
	// WorkDir holds the store (WORK/gc-store), kept afterwards.
	WorkDir string
	// Collect runs the collection on the store in dir (closed) and
	// returns its result and the peak RSS of the process that ran it, in
	// KiB. The command runs `nixcas gc` as a child process, so that the
	// figure is the collection's own.
	Collect func(ctx context.Context, dir string) (store.GCResult, int64, error)
	Log     io.Writer
}

// GCBenchResult is what the benchmark measured.
type GCBenchResult struct {
	Paths        int      `json:"paths"`
	PathsDeleted int      `json:"pathsDeleted"`
	Deleted      []string `json:"deleted,omitempty"`
	// Ideal*: the chunks only the deleted paths used, found by walking
	// every path's tree before the collection (not by the collector).
	IdealChunks     uint64        `json:"idealChunks"`
	IdealChunkBytes uint64        `json:"idealChunkBytes"`
	Before          castore.Stats `json:"statsBefore"`
	After           castore.Stats `json:"statsAfter"`
	// DiskBefore and DiskAfter are the data directory's allocated bytes.
	DiskBefore int64          `json:"diskBytesBefore"`
	DiskAfter  int64          `json:"diskBytesAfter"`
	GC         store.GCResult `json:"gc"`
	PeakRSSKiB int64          `json:"peakRSSKiB"`
	Seconds    float64        `json:"seconds"`
	// Build is how long making the store took.
	BuildSeconds float64 `json:"buildSeconds"`
}

// GC builds a store, deletes half its paths, and measures a collection.
func GC(ctx context.Context, o GCOptions) (*GCBenchResult, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	dir := filepath.Join(o.WorkDir, "gc-store")
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	res := &GCBenchResult{}
	start := time.Now()
	var err error
	if o.Synthetic > 0 {
		err = buildSynthetic(ctx, dir, o.Synthetic, res, o.Log)
	} else {
		err = buildReal(ctx, dir, o, res)
	}
	if err != nil {
		return nil, err
	}
	res.BuildSeconds = time.Since(start).Seconds()
	if res.DiskBefore, err = diskUsageOf(dir); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "gc: collecting %s\n", dir)
	start = time.Now()
	res.GC, res.PeakRSSKiB, err = o.Collect(ctx, dir)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		return nil, err
	}
	s, err := pebblestore.OpenReadOnly(dir, pebblestore.Options{})
	if err != nil {
		return nil, err
	}
	res.After, err = s.Stats(ctx)
	s.Close()
	if err != nil {
		return nil, err
	}
	res.DiskAfter, err = diskUsageOf(dir)
	return res, err
}

// diskUsageOf is the space allocated to dir.
func diskUsageOf(dir string) (int64, error) {
	s, err := pebblestore.OpenReadOnly(dir, pebblestore.Options{})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return s.DiskBytes()
}

// buildReal stores the inputs as store paths, deletes every other one
// (the first, the third, ...) and works out the ideal.
func buildReal(ctx context.Context, dir string, o GCOptions, res *GCBenchResult) error {
	if len(o.Inputs) == 0 {
		return errors.New("bench: gc: no inputs")
	}
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	x := store.NewIndex(s, s)
	var paths []*store.PathInfo
	put := func(pkg string, src io.Reader) error {
		r, err := narrender.Ingest(ctx, src, s, castore.WriterOptions{})
		if err != nil {
			return err
		}
		p := benchPathInfo(pkg, r)
		paths = append(paths, p)
		return x.Put(ctx, p)
	}
	for i, in := range o.Inputs {
		fmt.Fprintf(o.Log, "gc: storing %s\n", in.Name)
		isNAR, err := isNARFile(in.Path)
		if err != nil {
			return err
		}
		if o.RebuildSim == 0 || i < len(o.Inputs)-1 {
			src, wait, err := openNAR(ctx, in.Path, isNAR)
			if err != nil {
				return err
			}
			err = put(in.Name, src)
			if werr := wait(); err == nil {
				err = werr
			}
			if err != nil {
				return fmt.Errorf("bench: gc: %s: %w", in.Name, err)
			}
			continue
		}
		nar := in.Path
		var plan refPlan
		if isNAR {
			f, err := os.Open(nar)
			if err != nil {
				return err
			}
			plan, err = planRefs(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("bench: gc: %s: %w", nar, err)
			}
		} else {
			nar = filepath.Join(o.WorkDir, "gc-source.nar")
			if plan, err = dumpAndPlan(ctx, in.Path, nar); err != nil {
				return fmt.Errorf("bench: gc: %s: %w", in.Path, err)
			}
			defer os.Remove(nar)
		}
		for v := 0; v <= o.RebuildSim; v++ {
			fmt.Fprintf(o.Log, "gc: storing %s rebuild %d\n", in.Name, v)
			f, err := os.Open(nar)
			if err != nil {
				return err
			}
			err = put(in.Name, newRefRewriter(f, plan.Inject, v))
			f.Close()
			if err != nil {
				return fmt.Errorf("bench: gc: %s rebuild %d: %w", in.Name, v, err)
			}
		}
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	// The ideal: chunks of the deleted paths that no live path uses,
	// from a walk of every tree into maps (a benchmark-sized store).
	used := make([]map[castore.Digest]uint32, len(paths))
	for i, p := range paths {
		if used[i], err = treeChunks(ctx, s, p.Root); err != nil {
			return fmt.Errorf("bench: gc: %s: %w", p.Path, err)
		}
	}
	live := map[castore.Digest]bool{}
	for i := 1; i < len(paths); i += 2 {
		for d := range used[i] {
			live[d] = true
		}
	}
	dead := map[castore.Digest]uint32{}
	for i := 0; i < len(paths); i += 2 {
		for d, size := range used[i] {
			if !live[d] {
				dead[d] = size
			}
		}
		if _, err := x.Delete(ctx, paths[i].Digest()); err != nil {
			return err
		}
		res.Deleted = append(res.Deleted, paths[i].Path)
	}
	for _, size := range dead {
		res.IdealChunks++
		res.IdealChunkBytes += uint64(size)
	}
	res.Paths, res.PathsDeleted = len(paths), len(res.Deleted)
	res.Before, err = s.Stats(ctx)
	return err
}

// treeChunks lists the chunks of the tree at root with their sizes.
func treeChunks(ctx context.Context, s castore.Store, root castore.Entry) (map[castore.Digest]uint32, error) {
	out := map[castore.Digest]uint32{}
	stack := []castore.Entry{root}
	for len(stack) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch e.Kind {
		case castore.KindDirectory:
			dir, err := s.GetDirectory(ctx, e.Digest)
			if err != nil {
				return nil, err
			}
			stack = append(stack, dir.Entries()...)
		case castore.KindFile:
			chunks, err := castore.BlobChunks(ctx, s, e.Digest, e.Size)
			if err != nil {
				return nil, err
			}
			for _, c := range chunks {
				out[c.Digest] = c.Size
			}
		}
	}
	return out, nil
}

// Shape of the synthetic store: blobs of syntheticBlobChunks reachable
// chunks, syntheticDirFiles files a directory, under one root directory of
// one store path. Every reachable chunk has an unreachable neighbour.
const (
	syntheticBlobChunks = 1000
	syntheticDirFiles   = 1000
	syntheticChunkSize  = 64 << 10
)

// buildSynthetic writes n chunk index entries, half of them reachable.
func buildSynthetic(ctx context.Context, dir string, n int, res *GCBenchResult, log io.Writer) error {
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	rng := rand.NewChaCha8([32]byte{'n', 'i', 'x', 'c', 'a', 's'})
	digest := func() (d castore.Digest) {
		rng.Read(d[:])
		return d
	}
	var (
		phantom = digest() // the frame they all point into, never written
		refs    []castore.ChunkRef
		files   []castore.FileEntry
		subdirs []castore.DirectoryEntry
		written int
	)
	flushDir := func() error {
		if len(files) == 0 {
			return nil
		}
		d := &castore.Directory{Files: files}
		dd, err := s.PutDirectory(ctx, d)
		if err != nil {
			return err
		}
		subdirs = append(subdirs, castore.DirectoryEntry{Name: fmt.Sprintf("d%08d", len(subdirs)), Digest: dd, Size: d.Size()})
		files = nil
		return nil
	}
	for written < n {
		m := min(2*syntheticBlobChunks, n-written)
		refs = refs[:0]
		var blob []castore.ChunkRef
		for i := range m {
			r := castore.ChunkRef{Digest: digest(), Size: syntheticChunkSize}
			refs = append(refs, r)
			if i%2 == 0 {
				blob = append(blob, r)
			}
		}
		if err := s.PutPhantomChunks(ctx, phantom, refs); err != nil {
			return err
		}
		written += m
		size := uint64(len(blob)) * syntheticChunkSize
		b := digest()
		if len(blob) >= 2 {
			if err := s.PutBlob(ctx, b, size, blob); err != nil {
				return err
			}
		} else {
			b = blob[0].Digest // a file of one chunk is its chunk
		}
		files = append(files, castore.FileEntry{Name: fmt.Sprintf("f%08d", written), Digest: b, Size: size})
		if len(files) == syntheticDirFiles {
			if err := flushDir(); err != nil {
				return err
			}
		}
		if written%(1<<20) < m {
			fmt.Fprintf(log, "gc: %d chunk index entries written\n", written)
		}
	}
	if err := flushDir(); err != nil {
		return err
	}
	root := &castore.Directory{Directories: subdirs}
	rd, err := s.PutDirectory(ctx, root)
	if err != nil {
		return err
	}
	// The PathInfo is recorded as it is stored, without Index.Put's
	// check of every chunk (the chunks have no bytes).
	sum := sha256.Sum256([]byte("nixcas bench gc synthetic"))
	p := benchPathInfo("synthetic", narrender.Result{Root: castore.Entry{Kind: castore.KindDirectory, Digest: rd, Size: root.Size()}, NARSize: 1, NARSha256: sum})
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(p.ToProto())
	if err != nil {
		return err
	}
	d := p.Digest()
	if err := s.SetMeta(ctx, castore.MetaRecord{Kind: store.KindPathInfo, Key: d[:], Value: v}); err != nil {
		return err
	}
	if err := s.Flush(ctx); err != nil {
		return err
	}
	res.Paths = 1
	res.IdealChunks = uint64(n / 2)
	res.IdealChunkBytes = res.IdealChunks * syntheticChunkSize
	res.Before, err = s.Stats(ctx)
	return err
}

// WriteMarkdown prints the result as a table.
func (r *GCBenchResult) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "| figure | value |\n|---|---:|\n")
	row := func(name string, format string, v ...any) {
		fmt.Fprintf(w, "| %s | "+format+" |\n", append([]any{name}, v...)...)
	}
	row("store paths / deleted", "%d / %d", r.Paths, r.PathsDeleted)
	row("chunks before / after", "%d / %d", r.Before.Chunks, r.After.Chunks)
	row("chunks deleted / ideal", "%d / %d", r.GC.ChunksDeleted, r.IdealChunks)
	row("chunk bytes freed / ideal (MB, uncompressed)", "%.1f / %.1f", mb(int64(r.GC.ChunkBytesFreed)), mb(int64(r.IdealChunkBytes)))
	row("stored bytes before / after (MB)", "%.1f / %.1f", mb(int64(r.Before.StoredBytes)), mb(int64(r.After.StoredBytes)))
	row("stored bytes freed (MB)", "%.1f", mb(r.GC.StoredBytesFreed))
	row("disk bytes before / after (MB)", "%.1f / %.1f", mb(r.DiskBefore), mb(r.DiskAfter))
	row("frames deleted / rewritten / written", "%d / %d / %d", r.GC.FramesDeleted, r.GC.FramesRewritten, r.GC.FramesWritten)
	row("dead bytes left in frames (MB)", "%.1f in %d frames", mb(int64(r.GC.DeadBytesLeft)), r.GC.FramesWithDeadBytes)
	row("directories / blob indexes deleted", "%d / %d", r.GC.DirectoriesDeleted, r.GC.BlobsDeleted)
	row("collection time (s)", "%.1f", r.Seconds)
	row("peak RSS of the collection (KiB)", "%d", r.PeakRSSKiB)
	row("building the store (s)", "%.1f", r.BuildSeconds)
}
