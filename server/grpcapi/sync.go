package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/sync/semaphore"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/bufpool"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/store"
)

// readChunksMessage is the payload size at which ReadChunks sends a
// message.
const readChunksMessage = 1 << 20

// syncService implements nixcas.v1.SyncService.
type syncService struct {
	nixcaspb.UnimplementedSyncServiceServer
	cas       countingStore
	maxVerify uint64
	// streams holds a token per call moving a chunk stream.
	streams chan struct{}
	// frameReads is the frame bytes ReadFrames calls may hold at once.
	frameReads *semaphore.Weighted
	// frameBuffers keeps the buffers of frames sent, to read the next
	// ones into (see serverCodec).
	frameBuffers bufpool.Shared
}

// chunkStreamSlot waits for one of the server's chunk stream slots and
// returns its release.
func (s *syncService) chunkStreamSlot(ctx context.Context) (func(), error) {
	select {
	case s.streams <- struct{}{}:
		return func() { <-s.streams }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tryChunkStreamSlot takes a chunk stream slot if one is free, returning
// its release, or nil.
func (s *syncService) tryChunkStreamSlot() func() {
	select {
	case s.streams <- struct{}{}:
		return func() { <-s.streams }
	default:
		return nil
	}
}

// digestsArg converts the digests of a request, at most MaxBatch of them.
func digestsArg(list [][]byte, what string) ([]castore.Digest, error) {
	if len(list) > MaxBatch {
		return nil, fmt.Errorf("%w: %d %s, at most %d per request", castore.ErrInvalid, len(list), what, MaxBatch)
	}
	out := make([]castore.Digest, len(list))
	for i, b := range list {
		d, err := digestArg(b, fmt.Sprintf("%s[%d]", what, i))
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// Missing implements nixcas.v1.SyncService.
func (s *syncService) Missing(ctx context.Context, req *nixcaspb.MissingRequest) (*nixcaspb.MissingResponse, error) {
	if n := len(req.GetChunks()) + len(req.GetBlobs()) + len(req.GetDirectories()); n > MaxBatch {
		return nil, fmt.Errorf("%w: %d digests, at most %d per request", castore.ErrInvalid, n, MaxBatch)
	}
	// Chunk streams are offered while a slot is free: a client told no
	// sends chunks in messages rather than wait.
	resp := &nixcaspb.MissingResponse{ChunkStream: len(s.streams) < cap(s.streams)}
	lists := []struct {
		digests [][]byte
		what    string
		has     func(context.Context, castore.Digest) (bool, error)
		out     *[]uint32
	}{
		{req.GetChunks(), "chunks", s.cas.HasChunk, &resp.Chunks},
		{req.GetBlobs(), "blobs", s.hasBlob, &resp.Blobs},
		{req.GetDirectories(), "directories", s.hasDirectory, &resp.Directories},
	}
	for _, l := range lists {
		ds, err := digestsArg(l.digests, l.what)
		if err != nil {
			return nil, err
		}
		for i, d := range ds {
			ok, err := l.has(ctx, d)
			if err != nil {
				return nil, err
			}
			if !ok {
				*l.out = append(*l.out, uint32(i))
			}
		}
	}
	return resp, nil
}

// hasBlob reports whether blob d can be read: it has a chunk list (only
// recorded once its chunks are stored) or is a stored chunk.
func (s *syncService) hasBlob(ctx context.Context, d castore.Digest) (bool, error) {
	// A client told the blob is stored will not send it: the garbage
	// collector keeps it for its grace period.
	if err := castore.RecordUse(ctx, s.cas, castore.UseBlob, d); err != nil {
		return false, err
	}
	_, err := blobIndex(ctx, s.cas, d)
	if errors.Is(err, castore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// hasDirectory reports whether directory d is stored; every directory
// below a stored one is stored too (children are stored first).
func (s *syncService) hasDirectory(ctx context.Context, d castore.Digest) (bool, error) {
	if err := castore.RecordUse(ctx, s.cas, castore.UseDirectory, d); err != nil {
		return false, err
	}
	_, err := s.cas.GetDirectory(ctx, d)
	if errors.Is(err, castore.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PutChunks implements nixcas.v1.SyncService: chunks in messages, or a
// chunk stream when the first message carries a segment. Every chunk is
// verified before it is stored (PutEncoded); the store is synced before
// the call returns.
func (s *syncService) PutChunks(stream nixcaspb.SyncService_PutChunksServer) error {
	ctx := stream.Context()
	resp := &nixcaspb.PutChunksResponse{}
	for n := 0; ; n++ {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if msg.GetSegment() != nil {
			if n > 0 {
				return fmt.Errorf("%w: message %d: a chunk stream in a call that sent chunks", castore.ErrInvalid, n+1)
			}
			if err := s.putChunkStream(stream, msg, resp); err != nil {
				return err
			}
			break
		}
		for i, c := range msg.GetChunks() {
			d, err := digestArg(c.GetDigest(), fmt.Sprintf("chunks[%d]", i))
			if err != nil {
				return err
			}
			added, err := castore.PutEncoded(ctx, s.cas, d, c.GetData())
			if err != nil {
				return err
			}
			if added {
				resp.ChunksAdded++
			} else {
				resp.ChunksPresent++
			}
		}
	}
	if err := s.cas.Sync(ctx); err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// ReadChunks implements nixcas.v1.SyncService. Chunks are sent as a
// chunk stream when asked and a chunk stream slot is free, else in their
// stored form, or decoded when asked (for compressed calls).
func (s *syncService) ReadChunks(req *nixcaspb.ReadChunksRequest, stream nixcaspb.SyncService_ReadChunksServer) error {
	ctx := stream.Context()
	ds, err := digestsArg(req.GetDigests(), "digests")
	if err != nil {
		return err
	}
	if req.GetStream() != nil {
		// With every chunk stream slot taken, the answer is chunks,
		// which clients asking for a stream take as well.
		if release := s.tryChunkStreamSlot(); release != nil {
			defer release()
			return s.readChunkStream(req.GetStream(), ds, stream)
		}
	}
	// Each message gets its own buffer: a sent message must not change.
	var (
		msg = &nixcaspb.ReadChunksResponse{}
		buf []byte
	)
	for _, d := range ds {
		if buf == nil {
			buf = make([]byte, 0, readChunksMessage+castore.DefaultChunkerOptions.MaxSize+64)
		}
		start := len(buf)
		if req.GetDecoded() {
			buf, err = s.cas.GetChunk(ctx, d, append(buf, castore.CodecRaw))
		} else {
			buf, err = castore.GetEncoded(ctx, s.cas, d, buf)
		}
		if err != nil {
			return err
		}
		msg.Chunks = append(msg.Chunks, &nixcaspb.Chunk{Digest: d[:], Data: buf[start:len(buf):len(buf)]})
		if len(buf) >= readChunksMessage {
			if err := stream.Send(msg); err != nil {
				return err
			}
			msg, buf = &nixcaspb.ReadChunksResponse{}, nil
		}
	}
	if len(msg.Chunks) > 0 {
		return stream.Send(msg)
	}
	return nil
}

// PutBlobs implements nixcas.v1.SyncService. Cheap checks come first,
// for the whole request, before any chunk is read: the form of every blob,
// the same chunk never declared with two sizes, the bytes to hash against
// the request's budget (Options.MaxVerifyBytes), then which blobs are
// present and whether every chunk of the others is stored. Only then are
// each new blob's chunks read back in order and hashed; only a blob whose
// chunks hash to its digest is recorded. A blob listed with its one chunk
// (its digest is that chunk's) is recorded too: it counts its size in the
// store's logical bytes.
func (s *syncService) PutBlobs(ctx context.Context, req *nixcaspb.PutBlobsRequest) (*nixcaspb.PutBlobsResponse, error) {
	type blob struct {
		digest castore.Digest
		refs   []castore.ChunkRef
		size   uint64
	}
	var (
		blobs  []blob
		seen   = map[castore.Digest]int{} // blob digest -> index in blobs
		sizes  = map[castore.Digest]uint32{}
		toHash uint64
		chunks int
	)
	for i, b := range req.GetBlobs() {
		d, refs, err := blobArg(b, i)
		if err != nil {
			return nil, err
		}
		if chunks += len(refs); chunks > MaxBatch {
			return nil, fmt.Errorf("%w: over %d chunk references in one request", castore.ErrInvalid, MaxBatch)
		}
		var size uint64
		for j, r := range refs {
			if prev, ok := sizes[r.Digest]; ok && prev != r.Size {
				return nil, fmt.Errorf("%w: blobs[%d].chunks[%d]: chunk %s declared with %d bytes, and %d bytes before", castore.ErrInvalid, i, j, r.Digest, r.Size, prev)
			}
			sizes[r.Digest] = r.Size
			size += uint64(r.Size)
		}
		if k, ok := seen[d]; ok {
			if !slices.Equal(blobs[k].refs, refs) {
				return nil, fmt.Errorf("%w: blobs[%d]: blob %s listed twice with different chunks", castore.ErrInvalid, i, d)
			}
			continue
		}
		seen[d] = len(blobs)
		blobs = append(blobs, blob{d, refs, size})
		if len(refs) > 1 {
			toHash += size
		}
	}
	if s.maxVerify > 0 && toHash > s.maxVerify {
		return nil, fmt.Errorf("%w: the blobs of this request have %d bytes of chunks to verify, at most %d per request (the server's --max-verify-bytes)", ErrTooMuchWork, toHash, s.maxVerify)
	}

	// Existence: which blobs are new, and are all their chunks stored?
	var todo []blob
	has := map[castore.Digest]bool{}
	for _, b := range blobs {
		if len(b.refs) > 1 {
			ok, err := s.hasBlob(ctx, b.digest)
			if err != nil {
				return nil, err
			}
			if ok {
				continue
			}
		}
		refs := b.refs
		if len(refs) == 0 {
			// Listed without its chunk (nor its size): only checked.
			refs = []castore.ChunkRef{{Digest: b.digest}}
		}
		for _, c := range refs {
			if has[c.Digest] {
				continue
			}
			ok, err := s.cas.HasChunk(ctx, c.Digest)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w: blob %s: chunk %s is not stored", store.ErrIncomplete, b.digest, c.Digest)
			}
			has[c.Digest] = true
		}
		if len(b.refs) > 0 {
			todo = append(todo, b)
		}
	}

	resp := &nixcaspb.PutBlobsResponse{}
	f := castore.NewFetcher(ctx, s.cas, 0)
	defer f.Close()
	for _, b := range todo {
		if len(b.refs) > 1 {
			if err := s.checkBlob(f, b.digest, b.refs); err != nil {
				return nil, err
			}
		}
		if err := s.cas.PutBlob(ctx, b.digest, b.size, b.refs); err != nil {
			return nil, err
		}
		if len(b.refs) > 1 {
			resp.BlobsAdded++
		}
	}
	if err := s.cas.Sync(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

// blobArg converts blobs[i] of a request.
func blobArg(b *nixcaspb.Blob, i int) (castore.Digest, []castore.ChunkRef, error) {
	d, err := digestArg(b.GetDigest(), fmt.Sprintf("blobs[%d]", i))
	if err != nil {
		return d, nil, err
	}
	refs := make([]castore.ChunkRef, len(b.GetChunks()))
	for j, c := range b.GetChunks() {
		if refs[j].Digest, err = digestArg(c.GetDigest(), fmt.Sprintf("blobs[%d].chunks[%d]", i, j)); err != nil {
			return d, nil, err
		}
		if c.GetSize() > castore.MaxChunkSize {
			return d, nil, fmt.Errorf("%w: blobs[%d].chunks[%d]: size %d over %d", castore.ErrInvalid, i, j, c.GetSize(), castore.MaxChunkSize)
		}
		refs[j].Size = c.GetSize()
	}
	if len(refs) == 1 && refs[0].Digest != d {
		return d, nil, fmt.Errorf("%w: blob %s of one chunk lists chunk %s", castore.ErrInvalid, d, refs[0].Digest)
	}
	return d, refs, nil
}

// checkBlob reads the chunks refs through f, a few ahead, and checks that
// they hash, concatenated, to d. The bytes hashed are counted in the
// metrics.
func (s *syncService) checkBlob(f *castore.Fetcher, d castore.Digest, refs []castore.ChunkRef) error {
	const ahead = 8
	h := castore.NewHasher()
	var pending []*castore.PendingChunk
	defer func() {
		for _, p := range pending {
			p.Release()
		}
	}()
	next := 0
	for next < len(refs) || len(pending) > 0 {
		for len(pending) < ahead && next < len(refs) {
			pending = append(pending, f.Fetch(refs[next]))
			next++
		}
		data, err := pending[0].Wait()
		if err != nil {
			return err
		}
		h.Write(data)
		s.cas.m.verified.Add(float64(len(data)))
		pending[0].Release()
		pending = pending[1:]
	}
	var got castore.Digest
	h.Sum(got[:0])
	if got != d {
		return fmt.Errorf("%w: blob %s: its chunks hash to %s", castore.ErrCorrupt, d, got)
	}
	return nil
}

// StatBlobs implements nixcas.v1.SyncService.
func (s *syncService) StatBlobs(ctx context.Context, req *nixcaspb.StatBlobsRequest) (*nixcaspb.StatBlobsResponse, error) {
	ds, err := digestsArg(req.GetDigests(), "digests")
	if err != nil {
		return nil, err
	}
	resp := &nixcaspb.StatBlobsResponse{Blobs: make([]*nixcaspb.Blob, len(ds))}
	for i, d := range ds {
		refs, err := blobIndex(ctx, s.cas, d)
		if err != nil {
			return nil, err
		}
		b := &nixcaspb.Blob{Digest: d[:]}
		for _, r := range refs {
			b.Chunks = append(b.Chunks, &nixcaspb.ChunkMeta{Digest: r.Digest[:], Size: r.Size})
		}
		resp.Blobs[i] = b
	}
	return resp, nil
}
