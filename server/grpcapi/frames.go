package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// MaxReadFrames is the largest number of frames one ReadFrames request
// may name.
const MaxReadFrames = 4096

// readFramesMessage is the most frame bytes ReadFrames puts in one
// message.
const readFramesMessage = 1 << 20

// MaxFrameReadBytes bounds the frame bytes all ReadFrames calls hold at
// once: a call waits for room before it reads its next frame (a frame
// larger than that waits for all the room).
const MaxFrameReadBytes = 256 << 20

// noFrame marks, in ChunkPlaces' map of frames listed, a frame the client
// cannot decode: its chunks are reported in no frame.
const noFrame = ^uint32(0)

// newFrameReads returns the budget of MaxFrameReadBytes.
func newFrameReads() *semaphore.Weighted { return semaphore.NewWeighted(MaxFrameReadBytes) }

// ChunkPlaces implements nixcas.v1.SyncService: where each chunk is
// stored, from the store's castore.FrameSource; a store without one keeps
// no frames, so every chunk present is reported in no frame, as is every
// chunk in a filtered frame when the client does not decode those.
func (s *syncService) ChunkPlaces(ctx context.Context, req *nixcaspb.ChunkPlacesRequest) (*nixcaspb.ChunkPlacesResponse, error) {
	ds, err := digestsArg(req.GetDigests(), "digests")
	if err != nil {
		return nil, err
	}
	places := make([]nixcaspb.ChunkPlace, len(ds))
	resp := &nixcaspb.ChunkPlacesResponse{Places: make([]*nixcaspb.ChunkPlace, len(ds))}
	for i := range places {
		resp.Places[i] = &places[i]
	}
	src, ok := castore.As[castore.FrameSource](s.cas.Store)
	if !ok {
		for i, d := range ds {
			ok, err := s.cas.HasChunk(ctx, d)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("%w: digests[%d]: chunk %s", castore.ErrNotFound, i, d)
			}
		}
		return resp, nil
	}
	filtered := req.GetFrameFormat() >= nixcaspb.FrameFormatCallFilter
	frames := map[castore.Digest]uint32{} // frame -> 1 + index in resp.Frames
	for i, d := range ds {
		fc, err := s.placeChunk(ctx, src, d, filtered, frames, resp)
		if err != nil {
			return nil, fmt.Errorf("digests[%d]: %w", i, err)
		}
		if fc.Framed {
			places[i] = nixcaspb.ChunkPlace{Frame: frames[fc.Frame], Offset: fc.Offset, Length: fc.Length}
		}
	}
	return resp, nil
}

// placeChunk looks chunk d up in src and, when it is in a frame not yet
// listed in resp, lists that frame. A frame retired between the two
// lookups (compaction moved the chunk) makes it look the chunk up again,
// once. Without filtered, a chunk in a filtered frame is reported in no
// frame (the frame is marked in frames with noFrame).
func (s *syncService) placeChunk(ctx context.Context, src castore.FrameSource, d castore.Digest, filtered bool, frames map[castore.Digest]uint32, resp *nixcaspb.ChunkPlacesResponse) (castore.ChunkPlace, error) {
	for attempt := 0; ; attempt++ {
		fc, err := src.ChunkPlace(ctx, d)
		if err != nil || !fc.Framed {
			return fc, err
		}
		switch frames[fc.Frame] {
		case 0:
		case noFrame:
			return castore.ChunkPlace{}, nil
		default:
			return fc, nil
		}
		m, err := src.FrameMeta(ctx, fc.Frame)
		if errors.Is(err, castore.ErrNotFound) && attempt == 0 {
			continue
		}
		if err != nil {
			return castore.ChunkPlace{}, fmt.Errorf("chunk %s: %w", d, err)
		}
		if m.Filtered && !filtered {
			frames[fc.Frame] = noFrame
			return castore.ChunkPlace{}, nil
		}
		resp.Frames = append(resp.Frames, &nixcaspb.FrameMeta{Name: m.Name[:], StoredSize: m.StoredSize, DecodedSize: m.DecodedSize})
		frames[fc.Frame] = uint32(len(resp.Frames))
		return fc, nil
	}
}

// ReadFrames implements nixcas.v1.SyncService: each frame as stored,
// checked against its name by the store (castore.FrameSource.GetFrame),
// in messages of at most readFramesMessage bytes. The call holds one
// frame at a time, within the server's MaxFrameReadBytes.
func (s *syncService) ReadFrames(req *nixcaspb.ReadFramesRequest, stream nixcaspb.SyncService_ReadFramesServer) error {
	ctx := stream.Context()
	if n := len(req.GetNames()); n > MaxReadFrames {
		return fmt.Errorf("%w: %d frames, at most %d per request", castore.ErrInvalid, n, MaxReadFrames)
	}
	names := make([]castore.Digest, len(req.GetNames()))
	for i, b := range req.GetNames() {
		var err error
		if names[i], err = digestArg(b, fmt.Sprintf("names[%d]", i)); err != nil {
			return err
		}
	}
	src, ok := castore.As[castore.FrameSource](s.cas.Store)
	if !ok && len(names) > 0 {
		return fmt.Errorf("%w: names[0]: frame %s: this store keeps no frames", castore.ErrNotFound, names[0])
	}
	// Frames are compressed already: gRPC need not compress them again.
	if err := grpc.SetSendCompressor(ctx, encoding.Identity); err != nil {
		return err
	}
	for i, name := range names {
		if err := s.sendFrame(ctx, src, name, stream); err != nil {
			return fmt.Errorf("names[%d]: %w", i, err)
		}
	}
	return nil
}

// sendFrame sends frame name, read from src within the frame read budget.
func (s *syncService) sendFrame(ctx context.Context, src castore.FrameSource, name castore.Digest, stream nixcaspb.SyncService_ReadFramesServer) error {
	m, err := src.FrameMeta(ctx, name)
	if err != nil {
		return err
	}
	held := min(int64(m.StoredSize), MaxFrameReadBytes)
	if err := s.frameReads.Acquire(ctx, held); err != nil {
		return err
	}
	// The frame holds its budget until its last message is written, or
	// until the call ends (gRPC frees no message still queued on a
	// connection that died), whichever comes first.
	var once sync.Once
	give := func() { once.Do(func() { s.frameReads.Release(held) }) }
	stop := context.AfterFunc(ctx, give)
	// Read into a buffer of a frame sent before, which sentFrame gives
	// back once the transport has written every message of it. The
	// record's size is a hint, within the budget: GetFrame grows the
	// buffer to the bytes it reads.
	buf := s.frameBuffers.Get(int(held))
	obj, err := src.GetFrame(ctx, name, buf)
	if err != nil {
		s.frameBuffers.Put(buf)
		stop()
		give()
		return err
	}
	f := newSentFrame(obj, &s.frameBuffers, func() {
		stop()
		give()
	})
	defer f.release()
	meta := &nixcaspb.FrameMeta{Name: name[:], StoredSize: uint64(len(obj))}
	for off := 0; ; {
		end := min(off+readFramesMessage, len(obj))
		if err := stream.SendMsg(&frameMessage{meta: meta, data: obj[off:end], f: f}); err != nil {
			return err
		}
		meta = nil
		if off = end; off == len(obj) {
			return nil
		}
	}
}
