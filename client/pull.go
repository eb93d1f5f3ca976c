package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// PullStats counts what a pull fetched.
type PullStats struct {
	// BytesReceived counts the bytes of the messages carrying chunks, as
	// received on the wire: compressed, with the chunks' digests and gRPC
	// framing.
	BytesReceived uint64 `json:"bytesReceived"`
	// ChunksFetched counts the chunks received from the server.
	ChunksFetched uint64 `json:"chunksFetched"`
	// ChunksFromCache counts the tree's other chunks, found in the cache.
	ChunksFromCache uint64 `json:"chunksFromCache"`
}

// Pull writes the tree at root to dst, which must not exist; its parent
// must. Chunks missing from the cache are fetched from the server (whole
// frames where the server keeps them in frames and at least half of a
// frame is needed, see frames.go) and cached; every frame and chunk
// received is verified before it is cached, files are written while
// chunks arrive, every file checked against its digest, and the tree is
// built in a temporary directory beside dst and renamed to dst only when
// complete. The cache then also holds the tree's directories and chunk
// lists.
func (c *Client) Pull(ctx context.Context, root castore.Entry, dst string) (PullStats, error) {
	return c.PullFrom(ctx, root, c.opts.Base, dst)
}

// PullFrom is Pull with a base: a tree in the cache (the previous version
// of root, say) whose files serve as dictionaries for the chunks of the
// files at the same paths in root, which makes those chunks cheaper on the
// wire when they resemble the base's. A base missing from the cache is
// no base, as is a nil one.
func (c *Client) PullFrom(ctx context.Context, root castore.Entry, base *castore.Entry, dst string) (PullStats, error) {
	var st PullStats
	dst = filepath.Clean(dst)
	if _, err := os.Lstat(dst); err == nil {
		return st, fmt.Errorf("client: %s already exists", dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("client: %w", err)
	}
	t, err := c.remoteTree(ctx, root)
	if err != nil {
		return st, err
	}
	if err := c.chunkLists(ctx, t); err != nil {
		return st, err
	}
	if st, err = c.fetchAndWrite(ctx, t, []castore.Entry{root}, base, func(ctx context.Context, arr *arrivals) error {
		return c.materialize(ctx, t, dst, arr)
	}); err != nil {
		return st, err
	}
	return st, c.cacheTree(ctx, t)
}

// fetchAndWrite fetches the chunks of t the cache lacks (fetchChunks)
// while write writes the trees at roots, waiting through arr for each
// chunk being fetched, and reading it from the frame it came in while
// that is held (heldFrames), else from the cache: a pull of many files
// spends as long creating them as fetching their chunks, so the two
// overlap.
func (c *Client) fetchAndWrite(ctx context.Context, t *tree, roots []castore.Entry, base *castore.Entry, write func(context.Context, *arrivals) error) (PullStats, error) {
	var st PullStats
	need, _, err := c.missingChunks(ctx, t, func(castore.ChunkRef) { st.ChunksFromCache++ })
	if err != nil {
		return st, err
	}
	arr := newArrivals(need)
	g, gctx := errgroup.WithContext(ctx)
	if !c.opts.NoFrames && len(need) > 0 {
		arr.held = newHeldFrames(gctx, c.cache, chunkUses(roots, t.dirs, t.blobs))
	}
	g.Go(func() error {
		fetched, err := c.fetchChunks(gctx, t, need, base, arr)
		st.BytesReceived, st.ChunksFetched = fetched.BytesReceived, fetched.ChunksFetched
		if err != nil {
			return err
		}
		// The frames received whole, then the chunks put one by one,
		// durable before the tree's chunk lists and directories are
		// cached (cacheTree).
		if err := arr.held.finish(gctx); err != nil {
			return err
		}
		return c.cache.Sync(gctx)
	})
	g.Go(func() error {
		defer arr.held.doneWriting()
		return write(gctx, arr)
	})
	err = g.Wait()
	// gctx is done now: an importer left running by a failure returns
	// once its import in flight has, before the caller reads the cache.
	arr.held.stopped()
	return st, err
}

// remoteTree fetches the directories of the tree at root in one recursive
// stream, checking each against a digest and size named before it.
func (c *Client) remoteTree(ctx context.Context, root castore.Entry) (*tree, error) {
	t := &tree{root: root}
	switch root.Kind {
	case castore.KindFile:
		t.blobs = []blobItem{{digest: root.Digest, size: root.Size}}
		return t, nil
	case castore.KindSymlink:
		return t, castore.ValidateTarget(root.Target)
	case castore.KindDirectory:
	default:
		return nil, fmt.Errorf("%w: client: root entry of %v", castore.ErrInvalid, root.Kind)
	}
	stream, err := c.dirs.Get(ctx, &castorepb.GetDirectoryRequest{
		ByWhat:    &castorepb.GetDirectoryRequest_Digest{Digest: root.Digest[:]},
		Recursive: true,
	})
	if err != nil {
		return nil, fmt.Errorf("client: getting directories: %w", err)
	}
	// expected: directories named and not yet received, with the size
	// their entries give.
	expected := map[castore.Digest]uint64{root.Digest: root.Size}
	got := map[castore.Digest]bool{}
	seenBlobs := map[castore.Digest]bool{}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("client: getting directories: %w", err)
		}
		dir, err := castore.DirectoryFromProto(msg)
		if err != nil {
			return nil, fmt.Errorf("client: directory from the server: %w", err)
		}
		d := dir.Digest()
		if got[d] {
			continue // a repeat, which servers may send
		}
		size, ok := expected[d]
		if !ok {
			return nil, fmt.Errorf("%w: client: the server sent directory %s, which nothing named before", castore.ErrCorrupt, d)
		}
		if dir.Size() != size {
			return nil, fmt.Errorf("%w: client: directory %s has size %d, its entry says %d", castore.ErrCorrupt, d, dir.Size(), size)
		}
		delete(expected, d)
		got[d] = true
		t.dirs = append(t.dirs, dirItem{digest: d, dir: dir})
		for _, e := range dir.Directories {
			if got[e.Digest] {
				continue // sizes of entries naming received directories are checked below
			}
			if s, ok := expected[e.Digest]; ok && s != e.Size {
				return nil, fmt.Errorf("%w: client: directory %s named with sizes %d and %d", castore.ErrCorrupt, e.Digest, s, e.Size)
			}
			expected[e.Digest] = e.Size
		}
		for _, e := range dir.Files {
			if !seenBlobs[e.Digest] {
				seenBlobs[e.Digest] = true
				t.blobs = append(t.blobs, blobItem{digest: e.Digest, size: e.Size})
			}
		}
	}
	if len(expected) > 0 {
		return nil, fmt.Errorf("%w: client: the server did not send %d directories of the tree", castore.ErrNotFound, len(expected))
	}
	// Every entry naming a directory already received must agree on its
	// size too.
	sizes := make(map[castore.Digest]uint64, len(t.dirs))
	for _, di := range t.dirs {
		sizes[di.digest] = di.dir.Size()
	}
	for _, di := range t.dirs {
		for _, e := range di.dir.Directories {
			if sizes[e.Digest] != e.Size {
				return nil, fmt.Errorf("%w: client: entry %q names directory %s with size %d, it has %d", castore.ErrCorrupt, e.Name, e.Digest, e.Size, sizes[e.Digest])
			}
		}
	}
	t.dirs = childrenFirst(root.Digest, t.dirs)
	t.inNAROrder()
	return t, nil
}

// childrenFirst orders the directories of a tree so that every directory
// comes after all the directories it names (depth-first post-order from
// root), the order stores keep.
func childrenFirst(root castore.Digest, dirs []dirItem) []dirItem {
	byDigest := make(map[castore.Digest]*castore.Directory, len(dirs))
	for _, d := range dirs {
		byDigest[d.digest] = d.dir
	}
	out := make([]dirItem, 0, len(dirs))
	done := make(map[castore.Digest]bool, len(dirs))
	var visit func(d castore.Digest)
	visit = func(d castore.Digest) {
		if done[d] {
			return
		}
		done[d] = true
		for _, e := range byDigest[d].Directories {
			visit(e.Digest)
		}
		out = append(out, dirItem{digest: d, dir: byDigest[d]})
	}
	visit(root)
	return out
}

// chunkLists fills in the chunk list of every blob of t: from the cache
// when it knows the blob, else from the server, in batches. Lists are
// checked against the blobs' sizes; their digests are checked when the
// files are written.
func (c *Client) chunkLists(ctx context.Context, t *tree) error {
	var ask []int
	for i := range t.blobs {
		b := &t.blobs[i]
		if b.size == 0 {
			continue // the empty blob needs no chunk
		}
		refs, err := c.cache.GetBlobIndex(ctx, b.digest)
		switch {
		case err == nil:
			b.chunks = refs
			continue
		case !errors.Is(err, castore.ErrNotFound):
			return err
		}
		if b.size <= castore.MaxChunkSize {
			if ok, err := c.cache.HasChunk(ctx, b.digest); err != nil {
				return err
			} else if ok {
				b.chunks = []castore.ChunkRef{{Digest: b.digest, Size: uint32(b.size)}}
				continue
			}
		}
		ask = append(ask, i)
	}
	// Batches side by side, one per stream, so that the server looks
	// chunk lists up on all its cores.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Streams)
	for _, batch := range splitBatches(ask, statBlobsBatch, minStatBlobsBatch, c.opts.Streams) {
		g.Go(func() error {
			req := &nixcaspb.StatBlobsRequest{Digests: make([][]byte, len(batch))}
			for k, i := range batch {
				req.Digests[k] = t.blobs[i].digest[:]
			}
			resp, err := c.sync.StatBlobs(gctx, req)
			if err != nil {
				return fmt.Errorf("client: getting chunk lists: %w", err)
			}
			if len(resp.GetBlobs()) != len(batch) {
				return fmt.Errorf("%w: client: %d chunk lists for %d blobs", castore.ErrCorrupt, len(resp.GetBlobs()), len(batch))
			}
			for k, i := range batch {
				b := &t.blobs[i]
				refs, err := chunkList(b.digest, b.size, resp.GetBlobs()[k])
				if err != nil {
					return err
				}
				b.chunks = refs
			}
			return nil
		})
	}
	return g.Wait()
}

// splitBatches cuts items into batches of at most most items, and into
// at least ways batches where that leaves each at least least items.
func splitBatches[T any](items []T, most, least, ways int) [][]T {
	size := max(least, (len(items)+ways-1)/ways)
	size = min(size, most)
	var out [][]T
	for start := 0; start < len(items); start += size {
		out = append(out, items[start:min(start+size, len(items))])
	}
	return out
}

// chunkList converts and checks the chunk list of blob d of size bytes.
func chunkList(d castore.Digest, size uint64, pb *nixcaspb.Blob) ([]castore.ChunkRef, error) {
	if string(pb.GetDigest()) != string(d[:]) {
		return nil, fmt.Errorf("%w: client: chunk list of %x for blob %s", castore.ErrCorrupt, pb.GetDigest(), d)
	}
	if len(pb.GetChunks()) == 0 {
		if size > castore.MaxChunkSize {
			return nil, fmt.Errorf("%w: client: blob %s of %d bytes as one chunk", castore.ErrCorrupt, d, size)
		}
		return []castore.ChunkRef{{Digest: d, Size: uint32(size)}}, nil
	}
	refs := make([]castore.ChunkRef, len(pb.GetChunks()))
	var sum uint64
	for i, c := range pb.GetChunks() {
		cd, err := castore.DigestFromBytes(c.GetDigest())
		if err != nil {
			return nil, fmt.Errorf("%w: client: blob %s: %v", castore.ErrCorrupt, d, err)
		}
		if c.GetSize() > castore.MaxChunkSize {
			return nil, fmt.Errorf("%w: client: blob %s: chunk of %d bytes", castore.ErrCorrupt, d, c.GetSize())
		}
		refs[i] = castore.ChunkRef{Digest: cd, Size: c.GetSize()}
		sum += uint64(c.GetSize())
	}
	if sum != size {
		return nil, fmt.Errorf("%w: client: blob %s of %d bytes: chunks add up to %d", castore.ErrCorrupt, d, size, sum)
	}
	return refs, nil
}

// fetchChunks fetches the chunks of t missing from the cache and caches
// them (the caller then syncs the cache, and finishes arr's held frames),
// each verified on the way in: whole frames where the server keeps
// them in frames and at least half of a frame is needed (see frames.go),
// the others in batches of ReadChunks calls, all on parallel streams.
// With a base tree and chunk streams, every chunk is read with ReadChunks,
// in frames starting from the base's files. need lists the chunks to
// fetch, distinct, in tree order; arr, when not nil, is told of each
// chunk cached.
func (c *Client) fetchChunks(ctx context.Context, t *tree, need []castore.ChunkRef, base *castore.Entry, arr *arrivals) (PullStats, error) {
	var st PullStats
	defer arr.planDone() // also when the plan fails
	if len(need) == 0 {
		return st, nil
	}
	var total int64
	for _, r := range need {
		total += int64(r.Size)
	}
	var bar Progress = c.progress("fetching", total)
	defer bar.Finish()
	if arr != nil {
		arr.Progress, bar = bar, arr
	}
	var err error
	var whole []framePull
	rest := need
	if !c.opts.NoFrames && (base == nil || c.opts.Compression != CompressionStream) {
		if whole, rest, err = c.planFramePulls(ctx, need); err != nil {
			return st, err
		}
	}
	var batches [][]frame
	if len(rest) > 0 {
		planned, err := c.pullFrames(ctx, t, rest, base)
		if err != nil {
			return st, err
		}
		batches = frameBatches(planned)
	}
	// A job is one call: a batch of chunks or of whole frames.
	type job struct {
		chunks [][]frame // the frame lists of ReadChunks calls
		frames []framePull
	}
	var held *heldFrames
	if arr != nil {
		held = arr.held
	}
	// The calls go out in this order: batches of chunks, then whole
	// frames. Their chunks are ranked so for the writers.
	var jobs []job
	rank := 0
	for _, b := range batches {
		jobs = append(jobs, job{chunks: [][]frame{b}})
		for _, f := range b {
			for _, r := range f.chunks {
				arr.setRank(r.Digest, rank)
			}
		}
		rank++
	}
	for _, fs := range frameCalls(whole) {
		jobs = append(jobs, job{frames: fs})
		for _, f := range fs {
			for _, p := range f.chunks {
				arr.setRank(p.ref.Digest, rank)
			}
			rank++
		}
	}
	arr.planDone()
	var received, fetched atomic.Uint64
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan job)
	g.Go(func() error {
		defer close(work)
		for _, j := range jobs {
			select {
			case work <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range c.opts.Streams {
		g.Go(func() error {
			var bufs frameBuffers
			for j := range work {
				if j.frames != nil {
					n, chunks, gone, err := c.readWholeFrames(gctx, j.frames, &bufs, held, bar)
					received.Add(n)
					fetched.Add(chunks)
					if err != nil {
						return err
					}
					// Frames retired since they were located: their
					// chunks one by one, wherever they are now.
					var refs []castore.ChunkRef
					for _, f := range gone {
						for _, p := range f.chunks {
							refs = append(refs, p.ref)
						}
					}
					if len(refs) > 0 {
						j.chunks = frameBatches([]frame{{chunks: refs}})
					}
				}
				for _, b := range j.chunks {
					n, err := c.readFrames(gctx, b, bar)
					received.Add(n)
					if err != nil {
						return err
					}
					for _, f := range b {
						fetched.Add(uint64(len(f.chunks)))
					}
				}
			}
			return nil
		})
	}
	err = g.Wait()
	st.BytesReceived, st.ChunksFetched = received.Load(), fetched.Load()
	return st, err
}

// missingChunks returns the distinct chunks of t the cache lacks, in tree
// order, and the set of all of t's distinct chunks; cached is called for
// each distinct chunk the cache holds.
func (c *Client) missingChunks(ctx context.Context, t *tree, cached func(castore.ChunkRef)) ([]castore.ChunkRef, map[castore.Digest]bool, error) {
	seen := map[castore.Digest]bool{}
	var need []castore.ChunkRef
	for _, b := range t.blobs {
		for _, r := range b.chunks {
			if seen[r.Digest] {
				continue
			}
			seen[r.Digest] = true
			ok, err := c.cache.HasChunk(ctx, r.Digest)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				cached(r)
				continue
			}
			need = append(need, r)
		}
	}
	return need, seen, nil
}

// readBatches cuts refs into the chunk lists of ReadChunks calls: at most
// readBatch chunks and, past the first chunk, readBatchBytes bytes each.
func readBatches(refs []castore.ChunkRef) [][]castore.ChunkRef {
	var batches [][]castore.ChunkRef
	for start := 0; start < len(refs); {
		end, bytes := start, 0
		for end < len(refs) && end-start < readBatch && (bytes < readBatchBytes || end == start) {
			bytes += int(refs[end].Size)
			end++
		}
		batches = append(batches, refs[start:end])
		start = end
	}
	return batches
}

// pullFrames plans the frames of the chunk streams fetching need, the
// chunks of t the cache lacks: by file, against the files of base at
// the same paths when base is given.
func (c *Client) pullFrames(ctx context.Context, t *tree, need []castore.ChunkRef, base *castore.Entry) ([]frame, error) {
	if c.opts.Compression != CompressionStream || base == nil {
		return []frame{{chunks: need}}, nil
	}
	baseFiles, err := c.baseFiles(ctx, *base)
	if err != nil {
		return nil, err
	}
	dirs := make(map[castore.Digest]*castore.Directory, len(t.dirs))
	for _, d := range t.dirs {
		dirs[d.digest] = d.dir
	}
	blobs := make(map[castore.Digest][]castore.ChunkRef, len(t.blobs))
	for _, b := range t.blobs {
		blobs[b.digest] = b.chunks
	}
	files, err := treeFiles(t.root,
		func(d castore.Digest) (*castore.Directory, error) { return dirs[d], nil },
		func(d castore.Digest, _ uint64) ([]castore.ChunkRef, error) { return blobs[d], nil })
	if err != nil {
		return nil, err
	}
	var herr error
	usable := func(r castore.ChunkRef) bool {
		ok, err := c.cache.HasChunk(ctx, r.Digest)
		if err != nil && herr == nil {
			herr = err
		}
		return ok
	}
	frames := planFrames(files, need, baseFiles, usable)
	return frames, herr
}

// frameBatches cuts frames into the frame lists of ReadChunks calls, in
// order: at most readBatch chunks and, past the first frame,
// readBatchBytes bytes each; a frame larger than that is cut into
// frames of that size without dictionary.
func frameBatches(frames []frame) [][]frame {
	var batches [][]frame
	var cur []frame
	chunks, bytes := 0, int64(0)
	for _, f := range frames {
		for len(f.chunks) > 0 {
			if len(cur) > 0 && (chunks+len(f.chunks) > readBatch || bytes+f.bytes() > readBatchBytes) {
				batches = append(batches, cur)
				cur, chunks, bytes = nil, 0, 0
			}
			if len(f.chunks) <= readBatch && f.bytes() <= readBatchBytes {
				cur = append(cur, f)
				chunks += len(f.chunks)
				bytes += f.bytes()
				break
			}
			// Too big for one call: its first part alone.
			part := readBatches(f.chunks)[0]
			cur = append(cur, frame{dict: f.dict, chunks: part})
			chunks += len(part)
			bytes += frame{chunks: part}.bytes()
			f.chunks = f.chunks[len(part):]
		}
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}
	return batches
}

// readChunks fetches the chunks refs with one ReadChunks call and caches
// them, returning the bytes received on the wire.
func (c *Client) readChunks(ctx context.Context, refs []castore.ChunkRef, bar Progress) (uint64, error) {
	return c.readFrames(ctx, []frame{{chunks: refs}}, bar)
}

// cacheChunks receives the chunks refs from stream, first its first
// message (nil when none came), in order, verifies and caches them.
func (c *Client) cacheChunks(ctx context.Context, first *nixcaspb.ReadChunksResponse, stream nixcaspb.SyncService_ReadChunksClient, refs []castore.ChunkRef, bar Progress) error {
	next := 0
	for {
		msg := first
		first = nil
		if msg == nil {
			var err error
			if msg, err = stream.Recv(); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("client: reading chunks: %w", err)
			}
		}
		if msg.GetSegment() != nil {
			return fmt.Errorf("%w: client: the server mixed a chunk stream into chunks", castore.ErrCorrupt)
		}
		for _, ch := range msg.GetChunks() {
			if next == len(refs) {
				return fmt.Errorf("%w: client: the server sent more chunks than asked", castore.ErrCorrupt)
			}
			r := refs[next]
			next++
			if string(ch.GetDigest()) != string(r.Digest[:]) {
				return fmt.Errorf("%w: client: the server sent chunk %x for %s", castore.ErrCorrupt, ch.GetDigest(), r.Digest)
			}
			if size, err := castore.DecodedChunkSize(ch.GetData()); err != nil || size != int(r.Size) {
				return fmt.Errorf("%w: client: chunk %s of %d bytes, want %d (%v)", castore.ErrCorrupt, r.Digest, size, r.Size, err)
			}
			if _, err := castore.PutEncoded(ctx, c.cache, r.Digest, ch.GetData()); err != nil {
				return fmt.Errorf("client: chunk from the server: %w", err)
			}
			chunkCached(bar, r)
		}
	}
	if next != len(refs) {
		return fmt.Errorf("%w: client: the server sent %d chunks of %d", castore.ErrCorrupt, next, len(refs))
	}
	return nil
}

// materialize writes the tree t to dst, from the frames held for the
// pull or from the cache, waiting through arr for each chunk still being
// fetched.
func (c *Client) materialize(ctx context.Context, t *tree, dst string, arr *arrivals) error {
	blobs := make(map[castore.Digest]*blobItem, len(t.blobs))
	for i := range t.blobs {
		blobs[t.blobs[i].digest] = &t.blobs[i]
	}
	dirs := make(map[castore.Digest]*castore.Directory, len(t.dirs))
	for _, d := range t.dirs {
		dirs[d.digest] = d.dir
	}
	parent, base := filepath.Split(dst)
	if parent == "" {
		parent = "."
	}
	w := c.newFileWriter(arr)
	switch t.root.Kind {
	case castore.KindSymlink:
		return os.Symlink(t.root.Target, dst)
	case castore.KindFile:
		return w.write(ctx, parent, base, t.root, blobs[t.root.Digest], false)
	}

	// A directory: build the tree in a temporary directory, its
	// directories and symlinks first, then its files on parallel
	// workers, in the order their chunks come (see arrivals).
	tmp, err := os.MkdirTemp(parent, "."+base+".nixcas-pull-")
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	type job struct {
		dir  string
		e    castore.Entry
		rank int
	}
	var files []job
	var build func(d castore.Digest, path string) error
	build = func(d castore.Digest, path string) error {
		for _, e := range narrender.SortedEntries(dirs[d]) {
			p := filepath.Join(path, e.Name)
			switch e.Kind {
			case castore.KindDirectory:
				if err := os.Mkdir(p, 0o755); err != nil {
					return fmt.Errorf("client: %w", err)
				}
				if err := build(e.Digest, p); err != nil {
					return err
				}
			case castore.KindSymlink:
				if err := os.Symlink(e.Target, p); err != nil {
					return fmt.Errorf("client: %w", err)
				}
			case castore.KindFile:
				files = append(files, job{dir: path, e: e})
			}
		}
		return nil
	}
	if err := build(t.root.Digest, tmp); err != nil {
		return err
	}
	if err := arr.waitPlan(ctx); err != nil {
		return err
	}
	for i := range files {
		if b := blobs[files[i].e.Digest]; b != nil {
			files[i].rank = arr.rankOf(b.chunks)
		}
	}
	slices.SortStableFunc(files, func(a, b job) int { return cmp.Compare(a.rank, b.rank) })
	// Each writer takes the next file not taken. A writer stops at a
	// cancellation before its next file, so a tree cut short is never
	// renamed into place (a file of held or cached chunks waits for
	// nothing that would see the cancellation).
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range fileWriters {
		g.Go(func() error {
			for i := next.Add(1) - 1; i < int64(len(files)); i = next.Add(1) - 1 {
				if err := gctx.Err(); err != nil {
					return err
				}
				j := files[i]
				if err := w.write(gctx, j.dir, j.e.Name, j.e, blobs[j.e.Digest], true); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	ok = true
	return nil
}

// fileWriters is how many files a pull writes at once. Creating a file
// is most of the cost of a small one, in the kernel, and runs in
// parallel across directories; on two cores 4 writers were faster than
// 1, 2 or 8 (BenchmarkPull).
const fileWriters = 4

// fileWriter writes files from the frames held for a pull or from the
// cache, checking each against its digest, waiting through arr for
// chunks still being fetched. It is safe for concurrent use.
type fileWriter struct {
	cache castore.Store
	arr   *arrivals
	bufs  sync.Pool
}

func (c *Client) newFileWriter(arr *arrivals) *fileWriter {
	w := &fileWriter{cache: c.cache, arr: arr}
	w.bufs.New = func() any { b := make([]byte, 0, castore.DefaultChunkerOptions.MaxSize); return &b }
	return w
}

// write writes the file e, of blob b, into dir under name: to a temporary
// file first, renamed once its content hashes to e.Digest, or, when
// inTemp says dir is inside a temporary tree that is only renamed into
// place once complete, under its name straight away (the temporary file
// and the rename of each file cost a pull of thousands of files a third
// of its CPU, in the kernel).
func (w *fileWriter) write(ctx context.Context, dir, name string, e castore.Entry, b *blobItem, inTemp bool) (err error) {
	var f *newFile
	if inTemp {
		f, err = createFile(filepath.Join(dir, name), e.Executable)
	} else {
		f, err = createTemp(dir, e.Executable)
	}
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer func() {
		if err != nil {
			f.close()
			os.Remove(f.path)
		}
	}()
	h := castore.NewHasher()
	buf := w.bufs.Get().(*[]byte)
	defer w.bufs.Put(buf)
	var size uint64
	// A file of one chunk held in a frame received whole needs no hashing:
	// the chunk was checked against its digest, which is the file's.
	verified := false
	for _, r := range b.chunks {
		if err := w.arr.wait(ctx, r.Digest); err != nil {
			return err
		}
		// Into a buffer of the writer's own, from a held frame or the
		// cache: the kernel copies a chunk out of a buffer it copied
		// from before at a fraction of the cost of one it never read
		// (on this project's VM, writes from the decoded frames
		// themselves were two thirds of the kernel's copying).
		data, ok := w.arr.heldChunk(r.Digest, (*buf)[:0])
		if ok {
			verified = len(b.chunks) == 1 && r.Digest == e.Digest
		} else {
			data, err = w.cache.GetChunk(ctx, r.Digest, (*buf)[:0])
		}
		*buf = data[:0]
		if err != nil {
			return fmt.Errorf("client: %s: %w", filepath.Join(dir, name), err)
		}
		if !verified {
			h.Write(data)
		}
		if err := f.write(data); err != nil {
			return fmt.Errorf("client: %w", err)
		}
		size += uint64(len(data))
	}
	got := e.Digest
	if !verified {
		h.Sum(got[:0])
	}
	if got != e.Digest || size != e.Size {
		return fmt.Errorf("%w: client: %s: %d bytes hashing to %s, want %d bytes, %s", castore.ErrCorrupt, filepath.Join(dir, name), size, got, e.Size, e.Digest)
	}
	if err := f.close(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if inTemp {
		return nil
	}
	if err := os.Rename(f.path, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// cacheTree records in the cache the chunk lists and directories of a
// tree just written (so verified), children first, synced; and the empty
// chunk, when the tree has an empty file, which no pull fetches but a
// push from the cache sends.
func (c *Client) cacheTree(ctx context.Context, t *tree) error {
	for _, b := range t.blobs {
		if b.size == 0 {
			if _, err := c.cache.PutChunk(ctx, castore.NewChunk(nil)); err != nil {
				return err
			}
		}
		if len(b.chunks) > 1 {
			if err := c.cache.PutBlob(ctx, b.digest, b.size, b.chunks); err != nil {
				return err
			}
		}
	}
	for _, d := range t.dirs {
		if _, err := c.cache.PutDirectory(ctx, d.dir); err != nil {
			return err
		}
	}
	return c.cache.Sync(ctx)
}
