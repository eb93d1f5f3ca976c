package grpcapi

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/chunkstream"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// streamWriters holds chunk stream encoders between calls, by level:
// each holds tables and a window of chunkstream.MaxWindow.
var streamWriters [zstd.SpeedBestCompression + 1]sync.Pool

func getStreamWriter(level zstd.EncoderLevel) (*chunkstream.Writer, error) {
	if w, ok := streamWriters[level].Get().(*chunkstream.Writer); ok {
		return w, nil
	}
	return chunkstream.NewWriter(level)
}

// dictionary reads the chunks digests names into buf, concatenated, as a
// frame's dictionary, refusing more than chunkstream.MaxWindow bytes.
func dictionary(ctx context.Context, cas castore.ChunkStore, digests [][]byte, buf []byte, where string) ([]byte, error) {
	if len(digests) > chunkstream.MaxDictionaryChunks {
		return nil, fmt.Errorf("%w: %s: dictionary of %d chunks, at most %d", castore.ErrInvalid, where, len(digests), chunkstream.MaxDictionaryChunks)
	}
	buf = buf[:0]
	for i, b := range digests {
		d, err := digestArg(b, fmt.Sprintf("%s: dictionary[%d]", where, i))
		if err != nil {
			return nil, err
		}
		if buf, err = cas.GetChunk(ctx, d, buf); err != nil {
			return nil, fmt.Errorf("%s: dictionary chunk %s: %w", where, d, err)
		}
		if len(buf) > chunkstream.MaxWindow {
			return nil, fmt.Errorf("%w: %s: dictionary of over %d bytes", castore.ErrInvalid, where, chunkstream.MaxWindow)
		}
	}
	return buf, nil
}

// putChunkSegments is the chunkstream.Source of a PutChunks call in
// chunk stream mode. Dictionaries alternate between two buffers: the
// frame before the one being read has ended, so its buffer is free.
type putChunkSegments struct {
	ctx    context.Context
	cas    castore.ChunkStore
	stream nixcaspb.SyncService_PutChunksServer
	first  *nixcaspb.PutChunksRequest
	n      int // messages received
	frames int
	dicts  [2][]byte
}

func (p *putChunkSegments) NextSegment() ([]byte, bool, []byte, error) {
	msg := p.first
	p.first = nil
	if msg == nil {
		var err error
		if msg, err = p.stream.Recv(); err != nil {
			return nil, false, nil, err // io.EOF at the end
		}
	}
	p.n++
	if len(msg.GetChunks()) > 0 {
		return nil, false, nil, fmt.Errorf("%w: message %d: chunks in a call that sends a chunk stream", castore.ErrInvalid, p.n)
	}
	seg := msg.GetSegment()
	f := seg.GetFrame()
	if f == nil {
		return seg.GetData(), false, nil, nil
	}
	buf := &p.dicts[p.frames%2]
	p.frames++
	dict, err := dictionary(p.ctx, p.cas, f.GetDictionary(), *buf, fmt.Sprintf("message %d", p.n))
	if err != nil {
		return nil, false, nil, err
	}
	*buf = dict
	return seg.GetData(), true, dict, nil
}

// putChunkStream stores the chunks of a PutChunks call sending a chunk
// stream, first its first message; every chunk is verified before it is
// stored (castore.PutEncoded).
func (s *syncService) putChunkStream(stream nixcaspb.SyncService_PutChunksServer, first *nixcaspb.PutChunksRequest, resp *nixcaspb.PutChunksResponse) error {
	ctx := stream.Context()
	release, err := s.chunkStreamSlot(ctx)
	if err != nil {
		return err
	}
	defer release()
	r, err := chunkstream.NewReader(&putChunkSegments{ctx: ctx, cas: s.cas.Store, stream: stream, first: first})
	if err != nil {
		return err
	}
	defer r.Close()
	var stored []byte
	for i := 0; ; i++ {
		d, data, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("chunk stream, chunk %d: %w", i, err)
		}
		stored = append(append(stored[:0], castore.CodecRaw), data...)
		added, err := castore.PutEncoded(ctx, s.cas, d, stored)
		if err != nil {
			return fmt.Errorf("chunk stream, chunk %d: %w", i, err)
		}
		if added {
			resp.ChunksAdded++
		} else {
			resp.ChunksPresent++
		}
	}
}

// readChunkStream sends the chunks ds as a chunk stream, framed as req
// says. The caller holds a chunk stream slot.
func (s *syncService) readChunkStream(req *nixcaspb.ChunkStreamRequest, ds []castore.Digest, stream nixcaspb.SyncService_ReadChunksServer) error {
	ctx := stream.Context()
	frames := req.GetFrames()
	if len(frames) == 0 {
		frames = []*nixcaspb.ChunkStreamFrame{{Chunks: uint32(len(ds))}}
	}
	total, dictChunks := 0, 0
	for i, f := range frames {
		if f.GetChunks() == 0 && len(ds) > 0 {
			return fmt.Errorf("%w: stream.frames[%d]: a frame of no chunks", castore.ErrInvalid, i)
		}
		total += int(f.GetChunks())
		dictChunks += len(f.GetDictionary())
	}
	if total != len(ds) {
		return fmt.Errorf("%w: stream.frames: %d chunks in all, %d digests requested", castore.ErrInvalid, total, len(ds))
	}
	if dictChunks > MaxBatch {
		return fmt.Errorf("%w: stream.frames: %d dictionary digests, at most %d per request", castore.ErrInvalid, dictChunks, MaxBatch)
	}
	// The stream is compressed already: gRPC need not compress it again.
	if err := grpc.SetSendCompressor(ctx, encoding.Identity); err != nil {
		return err
	}
	level := chunkstream.Level(int(min(req.GetLevel(), 22)))
	w, err := getStreamWriter(level)
	if err != nil {
		return err
	}
	defer streamWriters[level].Put(w) // on error too: Begin resets it
	var dict, data []byte
	next := 0
	for i, f := range frames {
		where := fmt.Sprintf("stream.frames[%d]", i)
		if dict, err = dictionary(ctx, s.cas, f.GetDictionary(), dict, where); err != nil {
			return err
		}
		if err := w.Begin(dict); err != nil {
			return err
		}
		frame := &nixcaspb.ChunkStreamFrame{}
		send := func(b []byte) error {
			msg := &nixcaspb.ReadChunksResponse{Segment: &nixcaspb.ChunkStreamSegment{Frame: frame, Data: b}}
			frame = nil
			return stream.Send(msg)
		}
		for _, d := range ds[next : next+int(f.GetChunks())] {
			if data, err = s.cas.GetChunk(ctx, d, data[:0]); err != nil {
				w.End()
				return err
			}
			if err := w.Add(d, data); err != nil {
				w.End()
				return err
			}
			if w.Buffered() >= chunkstream.SegmentBytes {
				b, err := w.Flush()
				if err != nil {
					w.End()
					return err
				}
				if err := send(b); err != nil {
					w.End()
					return err
				}
			}
		}
		next += int(f.GetChunks())
		b, err := w.End()
		if err != nil {
			return err
		}
		if err := send(b); err != nil {
			return err
		}
	}
	return nil
}
