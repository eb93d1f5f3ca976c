package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// PushStats counts what a push sent.
type PushStats struct {
	// BytesSent counts the bytes of the messages carrying chunks, as sent
	// on the wire: compressed, with the chunks' digests and gRPC framing.
	BytesSent uint64 `json:"bytesSent"`
	// ChunksSent counts the chunks sent.
	ChunksSent uint64 `json:"chunksSent"`
	// ChunksSkipped counts the tree's other chunks, which the server had.
	ChunksSkipped uint64 `json:"chunksSkipped"`
}

// PushTree sends the tree at root, which must be in the cache, to the
// server: the chunks, blob chunk lists and directories it lacks, in that
// order, so that the server never holds a reference to something missing.
// The server has the whole tree when it returns.
func (c *Client) PushTree(ctx context.Context, root castore.Entry) (PushStats, error) {
	return c.PushTreeFrom(ctx, root, c.opts.Base)
}

// PushTreeFrom is PushTree with a base: a tree in the cache and on the
// server (the previous version of root, say) whose files serve as
// dictionaries for the chunks of the files at the same paths in root,
// which makes those chunks cheaper on the wire when they resemble the
// base's. Base files the server lacks are left out, and a base missing
// from the cache is no base. A nil base is none.
func (c *Client) PushTreeFrom(ctx context.Context, root castore.Entry, base *castore.Entry) (PushStats, error) {
	var st PushStats
	t, err := localTree(ctx, c.cache, root)
	if err != nil {
		return st, err
	}

	// Blobs the server lacks, then which of their chunks it lacks.
	blobDigests := make([]castore.Digest, len(t.blobs))
	for i, b := range t.blobs {
		blobDigests[i] = b.digest
	}
	missingBlobs, err := c.missing(ctx, missingBlobs, blobDigests)
	if err != nil {
		return st, err
	}
	all := map[castore.Digest]bool{}
	for _, b := range t.blobs {
		for _, r := range b.chunks {
			all[r.Digest] = true
		}
	}
	var candidates []castore.ChunkRef
	asked := map[castore.Digest]bool{}
	for _, i := range missingBlobs {
		for _, r := range t.blobs[i].chunks {
			if !asked[r.Digest] {
				asked[r.Digest] = true
				candidates = append(candidates, r)
			}
		}
	}
	candidateDigests := make([]castore.Digest, len(candidates))
	for i, r := range candidates {
		candidateDigests[i] = r.Digest
	}
	missingChunks, err := c.missing(ctx, missingChunks, candidateDigests)
	if err != nil {
		return st, err
	}
	send := make([]castore.ChunkRef, len(missingChunks))
	for i, j := range missingChunks {
		send[i] = candidates[j]
	}
	if c.opts.Compression == CompressionStream && c.serverStreams.Load() && len(send) > 0 {
		frames, err := c.pushFrames(ctx, t, send, base)
		if err != nil {
			return st, err
		}
		if st.BytesSent, err = c.sendChunkStreams(ctx, frames); err != nil {
			return st, err
		}
	} else if st.BytesSent, err = c.sendChunks(ctx, send); err != nil {
		return st, err
	}
	st.ChunksSent = uint64(len(send))
	st.ChunksSkipped = uint64(len(all) - len(send))

	// Chunk lists of the blobs of several chunks; blobs of one chunk go
	// too, so the server counts their size among its logical bytes.
	var blobs []blobItem
	for _, i := range missingBlobs {
		blobs = append(blobs, t.blobs[i])
	}
	if err := c.putBlobs(ctx, blobs); err != nil {
		return st, err
	}

	// Directories, leaves first.
	dirDigests := make([]castore.Digest, len(t.dirs))
	for i, d := range t.dirs {
		dirDigests[i] = d.digest
	}
	missingDirs, err := c.missing(ctx, missingDirectories, dirDigests)
	if err != nil {
		return st, err
	}
	if missingDirs = reachableMissing(t.dirs, missingDirs); len(missingDirs) > 0 {
		if err := c.putDirectories(ctx, t.dirs, missingDirs); err != nil {
			return st, err
		}
	}
	return st, nil
}

// reachableMissing keeps of the missing directories (indexes into dirs,
// children first, the root last) those reachable from the root through
// missing directories, ascending. The server checks one directory after
// another, so another client can store a directory and its parent between
// two of its checks: the parent, reported present, has its subtree
// stored, and a directory below it reported missing is not to be sent
// (the server refuses a directory its stream's root does not reach).
func reachableMissing(dirs []dirItem, missing []int) []int {
	if len(dirs) == 0 || len(missing) == 0 {
		return missing
	}
	at := make(map[castore.Digest]int, len(missing))
	for _, i := range missing {
		at[dirs[i].digest] = i
	}
	root := len(dirs) - 1
	if _, ok := at[dirs[root].digest]; !ok {
		return nil
	}
	reached := map[int]bool{root: true}
	queue := []int{root}
	for len(queue) > 0 {
		d := dirs[queue[0]].dir
		queue = queue[1:]
		for _, sub := range d.Directories {
			if i, ok := at[sub.Digest]; ok && !reached[i] {
				reached[i] = true
				queue = append(queue, i)
			}
		}
	}
	out := make([]int, 0, len(reached))
	for _, i := range missing {
		if reached[i] {
			out = append(out, i)
			delete(reached, i)
		}
	}
	return out
}

type missingKind int

const (
	missingChunks missingKind = iota
	missingBlobs
	missingDirectories
)

// missing asks the server which of ds it lacks, in batches, and returns
// their positions in ds, ascending.
func (c *Client) missing(ctx context.Context, kind missingKind, ds []castore.Digest) ([]int, error) {
	var out []int
	for start := 0; start < len(ds); start += missingBatch {
		batch := ds[start:min(start+missingBatch, len(ds))]
		list := make([][]byte, len(batch))
		for i := range batch {
			list[i] = batch[i][:]
		}
		req := &nixcaspb.MissingRequest{}
		switch kind {
		case missingChunks:
			req.Chunks = list
		case missingBlobs:
			req.Blobs = list
		case missingDirectories:
			req.Directories = list
		}
		resp, err := c.sync.Missing(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("client: asking what the server lacks: %w", err)
		}
		c.serverStreams.Store(resp.GetChunkStream())
		got := [...][]uint32{resp.GetChunks(), resp.GetBlobs(), resp.GetDirectories()}[kind]
		for _, i := range got {
			if int(i) >= len(batch) || len(out) > 0 && start+int(i) <= out[len(out)-1] {
				return nil, fmt.Errorf("%w: client: the server answered position %d of %d", castore.ErrInvalid, i, len(batch))
			}
			out = append(out, start+int(i))
		}
	}
	return out, nil
}

// sendChunks sends the chunks refs from the cache on parallel streams and
// returns the bytes sent on the wire.
func (c *Client) sendChunks(ctx context.Context, refs []castore.ChunkRef) (uint64, error) {
	if len(refs) == 0 {
		return 0, nil
	}
	var total int64
	for _, r := range refs {
		total += int64(r.Size)
	}
	bar := c.progress("uploading", total)
	defer bar.Finish()
	var sent atomic.Uint64
	g, ctx := errgroup.WithContext(ctx)
	callCtx := countWire(ctx, &sent, nil)
	decoded := c.opts.Compression != CompressionNone
	work := make(chan castore.ChunkRef)
	g.Go(func() error {
		defer close(work)
		for _, r := range refs {
			select {
			case work <- r:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range c.opts.Streams {
		g.Go(func() error {
			var stream nixcaspb.SyncService_PutChunksClient
			msg, size := &nixcaspb.PutChunksRequest{}, 0
			flush := func() error {
				if len(msg.Chunks) == 0 {
					return nil
				}
				var err error
				if stream == nil {
					if stream, err = c.sync.PutChunks(callCtx, c.chunkCallOptions()...); err != nil {
						return err
					}
				}
				if err := stream.Send(msg); err != nil {
					if err == io.EOF { // the server ended the call: its status says why
						_, err = stream.CloseAndRecv()
					}
					return err
				}
				msg, size = &nixcaspb.PutChunksRequest{}, 0
				return nil
			}
			for r := range work {
				var data []byte
				var err error
				if decoded {
					data, err = c.cache.GetChunk(ctx, r.Digest, []byte{castore.CodecRaw})
				} else {
					data, err = castore.GetEncoded(ctx, c.cache, r.Digest, nil)
				}
				if err != nil {
					return fmt.Errorf("client: chunk %s from the cache: %w", r.Digest, err)
				}
				msg.Chunks = append(msg.Chunks, &nixcaspb.Chunk{Digest: r.Digest[:], Data: data})
				size += len(data)
				bar.Add(int64(r.Size))
				if size >= putChunksMessage {
					if err := flush(); err != nil {
						return fmt.Errorf("client: sending chunks: %w", err)
					}
				}
			}
			if err := flush(); err != nil {
				return fmt.Errorf("client: sending chunks: %w", err)
			}
			if stream == nil {
				return nil
			}
			if _, err := stream.CloseAndRecv(); err != nil {
				return fmt.Errorf("client: sending chunks: %w", err)
			}
			return nil
		})
	}
	err := g.Wait()
	return sent.Load(), err
}

// putBlobs records the chunk lists of blobs on the server, in batches of
// at most putBlobsBatch chunk references and putBlobsBytes bytes to
// verify (a larger blob goes alone).
func (c *Client) putBlobs(ctx context.Context, blobs []blobItem) error {
	req, refs := &nixcaspb.PutBlobsRequest{}, 0
	var bytes uint64
	flush := func() error {
		if len(req.Blobs) == 0 {
			return nil
		}
		if _, err := c.sync.PutBlobs(ctx, req); err != nil {
			return fmt.Errorf("client: putting blob chunk lists: %w", err)
		}
		req, refs, bytes = &nixcaspb.PutBlobsRequest{}, 0, 0
		return nil
	}
	for _, b := range blobs {
		pb := &nixcaspb.Blob{Digest: b.digest[:]}
		for _, r := range b.chunks {
			pb.Chunks = append(pb.Chunks, &nixcaspb.ChunkMeta{Digest: r.Digest[:], Size: r.Size})
		}
		var size uint64
		if len(b.chunks) > 1 {
			for _, r := range b.chunks {
				size += uint64(r.Size)
			}
		}
		if refs > 0 && (refs+len(b.chunks) > putBlobsBatch || bytes+size > putBlobsBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		req.Blobs = append(req.Blobs, pb)
		refs += len(b.chunks)
		bytes += size
	}
	return flush()
}

// putDirectories sends dirs[i] for each i in which (ascending, so leaves
// first) on one DirectoryService.Put stream.
func (c *Client) putDirectories(ctx context.Context, dirs []dirItem, which []int) error {
	stream, err := c.dirs.Put(ctx)
	if err != nil {
		return fmt.Errorf("client: putting directories: %w", err)
	}
	for _, i := range which {
		if err := stream.Send(castore.DirectoryToProto(dirs[i].dir)); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server ended the call: CloseAndRecv says why
			}
			return fmt.Errorf("client: putting directories: %w", err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("client: putting directories: %w", err)
	}
	if want := dirs[which[len(which)-1]].digest; string(resp.GetRootDigest()) != string(want[:]) {
		return fmt.Errorf("%w: client: the server stored directory %x, want %s", castore.ErrCorrupt, resp.GetRootDigest(), want)
	}
	return nil
}

// pushFrames plans the frames of the chunk streams sending send, chunks
// of t: by file, against the files of base at the same paths, those the
// server holds, when base is given.
func (c *Client) pushFrames(ctx context.Context, t *tree, send []castore.ChunkRef, base *castore.Entry) ([]frame, error) {
	if base == nil {
		return planFrames(nil, send, nil, nil), nil
	}
	baseFiles, err := c.baseFiles(ctx, *base)
	if err != nil {
		return nil, err
	}
	// Only base files the server holds: ask once for all their blobs.
	var paths []string
	var digests []castore.Digest
	for p, f := range baseFiles {
		paths = append(paths, p)
		digests = append(digests, f.digest)
	}
	lacking, err := c.missing(ctx, missingBlobs, digests)
	if err != nil {
		return nil, err
	}
	for _, i := range lacking {
		delete(baseFiles, paths[i])
	}
	files, err := treeFiles(t.root,
		func(d castore.Digest) (*castore.Directory, error) { return c.cache.GetDirectory(ctx, d) },
		func(d castore.Digest, size uint64) ([]castore.ChunkRef, error) {
			return castore.BlobChunks(ctx, c.cache, d, size)
		})
	if err != nil {
		return nil, fmt.Errorf("client: reading the tree from the cache: %w", err)
	}
	return planFrames(files, send, baseFiles, func(castore.ChunkRef) bool { return true }), nil
}
