package client

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// Whole frames
//
// A server that keeps chunks in frames (many chunks compressed together
// as one zstd frame, named by the BLAKE3 of its stored bytes) can send a
// frame as it is stored, which costs it no decoding nor compressing,
// where sending chunks one by one makes it take each out of its decoded
// frame and compress the stream again. So a pull first asks where the
// chunks it lacks are (ChunkPlaces), fetches whole the frames of which it
// needs at least half (ReadFrames), checks each frame's bytes against its
// name, decodes it and checks each chunk it takes out against the chunk's
// digest, and reads the other chunks with ReadChunks, as servers without
// frames are read.

// Batches of the frame calls.
const (
	// placesBatch: digests per ChunkPlaces request; minPlacesBatch: the
	// requests go side by side, each of at least this many digests.
	placesBatch    = 1 << 15
	minPlacesBatch = 1 << 12
	// framesCallBytes bounds the stored bytes of the frames of one
	// ReadFrames call (a frame larger than that has a call of its own).
	// The streams' calls run side by side, each on frames further on in
	// the tree, and the frames received wait in memory for the writers
	// (heldBudget): calls of 16 MiB (about 48 MiB decoded each) made the
	// first stream wait for room behind frames the writers needed much
	// later, a stall that dropped frames every few calls.
	framesCallBytes = 4 << 20
	// framesCallFrames bounds the frames of one ReadFrames call, as the
	// server does (grpcapi.MaxReadFrames).
	framesCallFrames = 4096
	// maxStoredFrame bounds the stored size of a frame the client takes:
	// a frame decodes to at most pebblestore.MaxFrameSize, and zstd adds
	// little to bytes it cannot compress.
	maxStoredFrame = pebblestore.MaxFrameSize + pebblestore.MaxFrameSize/8
)

// placedChunk is a chunk the client lacks, at its place in a frame.
type placedChunk struct {
	ref    castore.ChunkRef
	offset uint32
}

// framePull is a frame to fetch whole and the chunks to take out of it.
type framePull struct {
	meta   castore.FrameMeta
	chunks []placedChunk
}

// planFramePulls asks the server where the chunks need are and splits
// them into the frames to fetch whole, those of which at least half the
// decoded bytes are needed, in the order need first names them, and the
// chunks to read one by one. A server without ChunkPlaces gets every chunk
// read one by one.
func (c *Client) planFramePulls(ctx context.Context, need []castore.ChunkRef) ([]framePull, []castore.ChunkRef, error) {
	var (
		frames []*framePull
		byName = map[castore.Digest]*framePull{}
		placed = make([]*framePull, len(need)) // nil: read one by one
		offset = make([]uint32, len(need))
	)
	// Batches side by side, one per stream, so that the server looks
	// places up on all its cores.
	batches := splitBatches(need, placesBatch, minPlacesBatch, c.opts.Streams)
	resps := make([]*nixcaspb.ChunkPlacesResponse, len(batches))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Streams)
	for i, batch := range batches {
		g.Go(func() error {
			resp, err := c.sync.ChunkPlaces(gctx, &nixcaspb.ChunkPlacesRequest{Digests: digestList(batch), FrameFormat: nixcaspb.FrameFormatCallFilter})
			resps[i] = resp
			return err
		})
	}
	if err := g.Wait(); status.Code(err) == codes.Unimplemented {
		return nil, need, nil // an older server
	} else if err != nil {
		return nil, nil, fmt.Errorf("client: locating chunks: %w", err)
	}
	start := 0
	for bi, batch := range batches {
		resp := resps[bi]
		metas := make([]*framePull, len(resp.GetFrames()))
		for k, f := range resp.GetFrames() {
			name, err := castore.DigestFromBytes(f.GetName())
			if err != nil {
				return nil, nil, fmt.Errorf("%w: client: frame %d from the server: %v", castore.ErrCorrupt, k, err)
			}
			if f.GetDecodedSize() > pebblestore.MaxFrameSize || f.GetStoredSize() > maxStoredFrame || f.GetStoredSize() == 0 {
				return nil, nil, fmt.Errorf("%w: client: frame %s from the server: %d bytes stored, %d decoded, over the limits", castore.ErrCorrupt, name, f.GetStoredSize(), f.GetDecodedSize())
			}
			fp := byName[name]
			if fp == nil {
				fp = &framePull{meta: castore.FrameMeta{Name: name, StoredSize: f.GetStoredSize(), DecodedSize: f.GetDecodedSize()}}
				byName[name] = fp
				frames = append(frames, fp)
			}
			metas[k] = fp
		}
		if len(resp.GetPlaces()) != len(batch) {
			return nil, nil, fmt.Errorf("%w: client: %d chunk places for %d chunks", castore.ErrCorrupt, len(resp.GetPlaces()), len(batch))
		}
		for k, p := range resp.GetPlaces() {
			if p.GetFrame() == 0 {
				continue
			}
			r := batch[k]
			if int(p.GetFrame()) > len(metas) {
				return nil, nil, fmt.Errorf("%w: client: chunk %s placed in frame %d of %d", castore.ErrCorrupt, r.Digest, p.GetFrame(), len(metas))
			}
			fp := metas[p.GetFrame()-1]
			if p.GetLength() != r.Size || uint64(p.GetOffset())+uint64(p.GetLength()) > fp.meta.DecodedSize {
				return nil, nil, fmt.Errorf("%w: client: chunk %s of %d bytes placed at %d+%d in frame %s of %d bytes", castore.ErrCorrupt, r.Digest, r.Size, p.GetOffset(), p.GetLength(), fp.meta.Name, fp.meta.DecodedSize)
			}
			placed[start+k], offset[start+k] = fp, p.GetOffset()
		}
		start += len(batch)
	}
	// A frame is worth fetching whole when at least half of it is needed.
	needed := map[*framePull]uint64{}
	for i, fp := range placed {
		if fp != nil {
			needed[fp] += uint64(need[i].Size)
		}
	}
	var rest []castore.ChunkRef
	for i, fp := range placed {
		if fp == nil || 2*needed[fp] < fp.meta.DecodedSize {
			rest = append(rest, need[i])
			continue
		}
		fp.chunks = append(fp.chunks, placedChunk{ref: need[i], offset: offset[i]})
	}
	var out []framePull
	for _, fp := range frames {
		if len(fp.chunks) > 0 {
			out = append(out, *fp)
		}
	}
	return out, rest, nil
}

// frameCalls cuts frames into the frame lists of ReadFrames calls, in
// order: at most framesCallFrames frames and, past the first,
// framesCallBytes stored bytes each.
func frameCalls(frames []framePull) [][]framePull {
	var calls [][]framePull
	for start := 0; start < len(frames); {
		end, bytes := start, uint64(0)
		for end < len(frames) && end-start < framesCallFrames && (bytes+frames[end].meta.StoredSize <= framesCallBytes || end == start) {
			bytes += frames[end].meta.StoredSize
			end++
		}
		calls = append(calls, frames[start:end])
		start = end
	}
	return calls
}

// frameBuffers are the stored and decoded bytes of one frame at a time.
type frameBuffers struct {
	stored, decoded, chunk []byte
}

// readWholeFrames fetches frames with one ReadFrames call and caches the
// chunks wanted from each, verified. It returns the bytes received on the
// wire, the chunks cached, and the frames it did not get because the
// server no longer has them (compaction or garbage collection retired
// them since ChunkPlaces): their chunks are to be read one by one.
func (c *Client) readWholeFrames(ctx context.Context, frames []framePull, bufs *frameBuffers, held *heldFrames, bar Progress) (wire, chunks uint64, gone []framePull, err error) {
	var in atomic.Uint64
	names := make([][]byte, len(frames))
	for i := range frames {
		names[i] = frames[i].meta.Name[:]
	}
	stream, err := c.sync.ReadFrames(countWire(ctx, nil, &in), &nixcaspb.ReadFramesRequest{Names: names}, framesCallOption)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("client: reading frames: %w", err)
	}
	k := 0 // the frame being received
	for k < len(frames) {
		f := &frames[k]
		dst := bufs.stored[:0]
		if held != nil {
			// Held, and imported as it is: a buffer of its own.
			dst = held.takeBuffer(&held.storedFree, int(f.meta.StoredSize))
		}
		obj, err := receiveFrame(stream, f.meta, dst)
		if status.Code(err) == codes.NotFound {
			return in.Load(), chunks, frames[k:], nil
		}
		if err != nil {
			return in.Load(), chunks, nil, err
		}
		var n uint64
		if held != nil {
			n, err = holdFrame(ctx, f, obj, held, bar)
		} else {
			bufs.stored = obj
			n, err = c.cacheFrameChunks(ctx, f, obj, bufs, bar)
		}
		chunks += n
		if err != nil {
			return in.Load(), chunks, nil, err
		}
		k++
	}
	if _, err := stream.Recv(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: client: the server sent more frames than asked", castore.ErrCorrupt)
		}
		return in.Load(), chunks, nil, fmt.Errorf("client: reading frames: %w", err)
	}
	return in.Load(), chunks, nil, nil
}

// receiveFrame receives the frame m from stream into dst (its bytes are
// checked against its name when it is decoded): on a stream made with
// framesCallOption, straight into dst's array while it has room.
func receiveFrame(stream nixcaspb.SyncService_ReadFramesClient, m castore.FrameMeta, dst []byte) ([]byte, error) {
	msg := &nixcaspb.ReadFramesResponse{}
	for first := true; first || uint64(len(dst)) < m.StoredSize; first = false {
		// framesCodec appends the message's bytes to Data (another
		// codec replaces Data).
		msg.Reset()
		msg.Data = dst[len(dst):]
		err := stream.RecvMsg(msg)
		if err == io.EOF {
			return dst, fmt.Errorf("%w: client: frame %s: the server ended the stream after %d of its %d bytes", castore.ErrCorrupt, m.Name, len(dst), m.StoredSize)
		}
		if status.Code(err) == codes.NotFound {
			return dst, err
		}
		if undecodable(err) {
			return dst, fmt.Errorf("%w: client: frame %s: the server's message did not decode: %v", castore.ErrCorrupt, m.Name, err)
		}
		if err != nil {
			return dst, fmt.Errorf("client: reading frame %s: %w", m.Name, err)
		}
		if meta := msg.GetFrame(); first != (meta != nil) || meta != nil && (string(meta.GetName()) != string(m.Name[:]) || meta.GetStoredSize() != m.StoredSize) {
			return dst, fmt.Errorf("%w: client: the server sent frame %x of %d bytes where frame %s of %d bytes was due", castore.ErrCorrupt, meta.GetName(), meta.GetStoredSize(), m.Name, m.StoredSize)
		}
		if uint64(len(dst))+uint64(len(msg.GetData())) > m.StoredSize {
			return dst, fmt.Errorf("%w: client: frame %s: the server sent more than its %d bytes", castore.ErrCorrupt, m.Name, m.StoredSize)
		}
		dst = appendReceived(dst, msg.GetData())
	}
	return dst, nil
}

// grpcUnmarshalFailed begins the message of the INTERNAL status gRPC
// makes of a codec's Unmarshal error, which it does not wrap.
const grpcUnmarshalFailed = "grpc: failed to unmarshal the received message"

// undecodable says whether err is a message received that its codec
// refused (framesCodec refuses a malformed ReadFramesResponse).
func undecodable(err error) bool {
	s, ok := status.FromError(err)
	return ok && s.Code() == codes.Internal && strings.HasPrefix(s.Message(), grpcUnmarshalFailed)
}

// appendReceived appends data to dst, unless framesCodec received it into
// dst's array already, right after dst's bytes.
func appendReceived(dst, data []byte) []byte {
	if n := len(dst); len(data) > 0 && cap(dst) > n && &dst[:n+1][n] == &data[0] {
		return dst[:n+len(data)]
	}
	return append(dst, data...)
}

// holdFrame checks the frame f's stored bytes obj against its name,
// decodes them and checks the chunks wanted from it against their
// digests (pebblestore.VerifyFrame), then holds the frame for the pull's
// writers and the cache's import. A frame refused, or not held, gives
// its buffers back to held's pools.
func holdFrame(ctx context.Context, f *framePull, obj []byte, held *heldFrames, bar Progress) (uint64, error) {
	places := make([]pebblestore.FrameChunk, len(f.chunks))
	for i, p := range f.chunks {
		places[i] = pebblestore.FrameChunk{Digest: p.ref.Digest, Offset: p.offset, Length: p.ref.Size}
	}
	buf := held.takeBuffer(&held.decodedFree, int(f.meta.DecodedSize))
	vf, err := pebblestore.VerifyFrameInto(f.meta.Name, obj, buf, places)
	if err != nil {
		held.returnBuffer(&held.decodedFree, buf)
		held.returnBuffer(&held.storedFree, obj)
		return 0, fmt.Errorf("client: from the server: %w", err)
	}
	if n := uint64(len(vf.Decoded())); n != f.meta.DecodedSize {
		held.returnBuffer(&held.decodedFree, vf.Decoded())
		held.returnBuffer(&held.storedFree, obj)
		return 0, fmt.Errorf("%w: client: frame %s from the server decodes to %d bytes, the server said %d", castore.ErrCorrupt, f.meta.Name, n, f.meta.DecodedSize)
	}
	if err := held.add(ctx, vf); err != nil { // add returns the buffers of a frame it does not hold
		return 0, err
	}
	for _, p := range f.chunks {
		chunkCached(bar, p.ref)
	}
	return uint64(len(f.chunks)), nil
}

// cacheFrameChunks checks the frame f's stored bytes obj against its
// name, decodes them, and caches the chunks wanted from it, each checked
// against its digest, one by one: for a cache that cannot import frames.
func (c *Client) cacheFrameChunks(ctx context.Context, f *framePull, obj []byte, bufs *frameBuffers, bar Progress) (uint64, error) {
	data, err := pebblestore.DecodeFrame(f.meta.Name, obj, bufs.decoded[:0])
	if err != nil {
		return 0, fmt.Errorf("client: from the server: %w", err)
	}
	bufs.decoded = data
	if uint64(len(data)) != f.meta.DecodedSize {
		return 0, fmt.Errorf("%w: client: frame %s from the server decodes to %d bytes, the server said %d", castore.ErrCorrupt, f.meta.Name, len(data), f.meta.DecodedSize)
	}
	// Chunks are cached raw: compressing them for the cache (lz4) would
	// cost more than the rest of their way (a 200 MiB pull spent a
	// quarter of its CPU there).
	enc, raw := castore.As[castore.EncodedChunkStore](c.cache)
	var n uint64
	for _, p := range f.chunks {
		b := data[p.offset : p.offset+p.ref.Size]
		if raw {
			// PutEncodedChunk verifies the chunk against its digest.
			bufs.chunk = append(append(bufs.chunk[:0], castore.CodecRaw), b...)
			_, err = enc.PutEncodedChunk(ctx, p.ref.Digest, bufs.chunk)
		} else {
			var ch castore.Chunk
			if ch, err = castore.VerifyChunk(p.ref.Digest, b); err == nil {
				_, err = c.cache.PutChunk(ctx, ch)
			}
		}
		if err != nil {
			return n, fmt.Errorf("client: frame %s from the server, chunk at %d: %w", f.meta.Name, p.offset, err)
		}
		n++
		chunkCached(bar, p.ref)
	}
	return n, nil
}
