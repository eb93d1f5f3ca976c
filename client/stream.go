package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/chunkstream"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// Compression modes of the calls moving chunks (Options.Compression).
const (
	// CompressionStream: a chunk stream per call (one zstd stream, frames
	// starting from dictionaries of chunks the receiver holds when a base
	// tree is given), falling back to CompressionMessages with servers
	// that do not read chunk streams.
	CompressionStream = nixcaspb.Zstd
	// CompressionMessages: each message compressed on its own by gRPC's
	// zstd compressor, chunks sent decoded.
	CompressionMessages = "zstd-messages"
	// CompressionNone: chunks in their stored form (lz4 where it helps).
	CompressionNone = "none"
)

// Frame sizes: a frame with a dictionary carries at most frameBytes of
// chunks after at most dictBytes of dictionary, so that the two fit the
// stream's window together; a frame without one carries at most
// readBatchBytes.
const (
	frameBytes = chunkstream.MaxWindow / 2
	dictBytes  = chunkstream.MaxWindow / 2
)

// frame is one zstd frame of a chunk stream: the chunks it carries and
// the dictionary it starts from, chunks the receiver holds.
type frame struct {
	dict   []castore.ChunkRef
	chunks []castore.ChunkRef
}

func (f frame) bytes() int64 {
	var n int64
	for _, r := range f.chunks {
		n += int64(r.Size)
	}
	return n
}

// fileChunks is a file of a tree: its path and its blob's chunk list.
type fileChunks struct {
	path   string
	digest castore.Digest
	size   uint64
	chunks []castore.ChunkRef
}

// treeFiles lists the files of the tree at root, each path with its blob
// (chunk lists from blobs, by digest), reading directories with dir.
func treeFiles(root castore.Entry, dir func(castore.Digest) (*castore.Directory, error), blobs func(castore.Digest, uint64) ([]castore.ChunkRef, error)) ([]fileChunks, error) {
	var out []fileChunks
	var walk func(d castore.Digest, p string) error
	walk = func(d castore.Digest, p string) error {
		dd, err := dir(d)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		for _, e := range dd.Entries() {
			switch e.Kind {
			case castore.KindDirectory:
				if err := walk(e.Digest, path.Join(p, e.Name)); err != nil {
					return err
				}
			case castore.KindFile:
				chunks, err := blobs(e.Digest, e.Size)
				if err != nil {
					return fmt.Errorf("%q: %w", path.Join(p, e.Name), err)
				}
				out = append(out, fileChunks{path: path.Join(p, e.Name), digest: e.Digest, size: e.Size, chunks: chunks})
			}
		}
		return nil
	}
	switch root.Kind {
	case castore.KindDirectory:
		return out, walk(root.Digest, "")
	case castore.KindFile:
		chunks, err := blobs(root.Digest, root.Size)
		return []fileChunks{{path: "", digest: root.Digest, size: root.Size, chunks: chunks}}, err
	}
	return nil, nil
}

// baseFiles returns the files of the tree base in the cache by path, for
// dictionaries; none when the cache lacks part of it.
func (c *Client) baseFiles(ctx context.Context, base castore.Entry) (map[string]fileChunks, error) {
	files, err := treeFiles(base,
		func(d castore.Digest) (*castore.Directory, error) { return c.cache.GetDirectory(ctx, d) },
		func(d castore.Digest, size uint64) ([]castore.ChunkRef, error) {
			return castore.BlobChunks(ctx, c.cache, d, size)
		})
	if errors.Is(err, castore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("client: base tree in the cache: %w", err)
	}
	out := make(map[string]fileChunks, len(files))
	for _, f := range files {
		out[f.path] = f
	}
	return out, nil
}

// planFrames cuts the chunks send (in the order given, each once) into
// the frames of chunk streams, grouped by the files of files that hold
// them, in files' order. A file whose path is in base, with other
// content, gets frames of its own starting from a dictionary of the base
// file's chunks around the same relative offset (the previous version of
// the file, typically); the chunks of other files share frames without
// dictionary, in order, each of at most readBatchBytes (the window: more
// context would not be seen), so that parallel streams share the work.
// usable says whether a base chunk may be used in a dictionary (the
// receiver holds it).
func planFrames(files []fileChunks, send []castore.ChunkRef, base map[string]fileChunks, usable func(castore.ChunkRef) bool) []frame {
	want := make(map[castore.Digest]bool, len(send))
	for _, r := range send {
		want[r.Digest] = true
	}
	var frames []frame
	var plain frame
	var plainBytes int64
	flushPlain := func() {
		if len(plain.chunks) > 0 {
			frames = append(frames, plain)
		}
		plain, plainBytes = frame{}, 0
	}
	addPlain := func(r castore.ChunkRef) {
		if plainBytes+int64(r.Size) > readBatchBytes && len(plain.chunks) > 0 {
			flushPlain()
		}
		plain.chunks = append(plain.chunks, r)
		plainBytes += int64(r.Size)
	}
	for _, f := range files {
		// The file's chunks still to send, with their offsets.
		var mine []castore.ChunkRef
		var offsets []uint64
		var off uint64
		for _, r := range f.chunks {
			if want[r.Digest] {
				delete(want, r.Digest)
				mine = append(mine, r)
				offsets = append(offsets, off)
			}
			off += uint64(r.Size)
		}
		if len(mine) == 0 {
			continue
		}
		b, ok := base[f.path]
		if !ok || b.size == 0 || len(b.chunks) == 0 || sameChunks(b.chunks, f.chunks) {
			for _, r := range mine {
				addPlain(r)
			}
			continue
		}
		for start := 0; start < len(mine); {
			end, n := start, int64(0)
			for end < len(mine) && (n+int64(mine[end].Size) <= frameBytes || end == start) {
				n += int64(mine[end].Size)
				end++
			}
			lo, hi := offsets[start], offsets[end-1]+uint64(mine[end-1].Size)
			frames = append(frames, frame{dict: dictAround(b, lo, hi, f.size, usable), chunks: mine[start:end]})
			start = end
		}
	}
	// Chunks no file holds (none, when send comes from files).
	for _, r := range send {
		if want[r.Digest] {
			delete(want, r.Digest)
			addPlain(r)
		}
	}
	flushPlain()
	return frames
}

func sameChunks(a, b []castore.ChunkRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dictAround picks the chunks of base file b, at most dictBytes, around
// the offsets of b that correspond, relatively, to [lo, hi) of a file of
// size bytes.
func dictAround(b fileChunks, lo, hi, size uint64, usable func(castore.ChunkRef) bool) []castore.ChunkRef {
	center := float64(lo+hi) / 2 / float64(size) * float64(b.size)
	from := max(0, int64(center)-dictBytes/2)
	to := from + dictBytes
	if to > int64(b.size) {
		to = int64(b.size)
		from = max(0, to-dictBytes)
	}
	var out []castore.ChunkRef
	var off, n int64
	for _, r := range b.chunks {
		end := off + int64(r.Size)
		if end > from && off < to && n+int64(r.Size) <= dictBytes && usable(r) {
			out = append(out, r)
			n += int64(r.Size)
		}
		off = end
	}
	return out
}

// dictionaryOf reads the chunks refs from the cache, concatenated.
func (c *Client) dictionaryOf(ctx context.Context, refs []castore.ChunkRef, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for _, r := range refs {
		var err error
		if buf, err = c.cache.GetChunk(ctx, r.Digest, buf); err != nil {
			return nil, fmt.Errorf("client: dictionary chunk %s from the cache: %w", r.Digest, err)
		}
	}
	return buf, nil
}

func digestList(refs []castore.ChunkRef) [][]byte {
	out := make([][]byte, len(refs))
	for i := range refs {
		out[i] = refs[i].Digest[:]
	}
	return out
}

// sendChunkStreams sends the frames as chunk streams, a PutChunks call
// per stream and the frames shared between the streams in order, and
// returns the bytes sent on the wire.
func (c *Client) sendChunkStreams(ctx context.Context, frames []frame) (uint64, error) {
	var total int64
	for _, f := range frames {
		total += f.bytes()
	}
	bar := c.progress("uploading", total)
	defer bar.Finish()
	var sent atomic.Uint64
	g, ctx := errgroup.WithContext(ctx)
	callCtx := countWire(ctx, &sent, nil)
	work := make(chan frame)
	g.Go(func() error {
		defer close(work)
		for _, f := range frames {
			select {
			case work <- f:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range c.opts.Streams {
		g.Go(func() error {
			if err := c.sendChunkStream(ctx, callCtx, work, bar); err != nil {
				return fmt.Errorf("client: sending chunks: %w", err)
			}
			return nil
		})
	}
	err := g.Wait()
	return sent.Load(), err
}

// sendChunkStream sends the frames from work on one PutChunks call.
func (c *Client) sendChunkStream(ctx, callCtx context.Context, work <-chan frame, bar Progress) error {
	var (
		stream nixcaspb.SyncService_PutChunksClient
		w      *chunkstream.Writer
		dict   []byte
		data   []byte
	)
	send := func(seg *nixcaspb.ChunkStreamSegment) error {
		if err := stream.Send(&nixcaspb.PutChunksRequest{Segment: seg}); err != nil {
			if err == io.EOF { // the server ended the call: its status says why
				_, err = stream.CloseAndRecv()
			}
			return err
		}
		return nil
	}
	for f := range work {
		if stream == nil {
			var err error
			if stream, err = c.sync.PutChunks(callCtx); err != nil {
				return err
			}
			if w, err = chunkstream.NewWriter(chunkstream.Level(c.opts.WireLevel)); err != nil {
				return err
			}
		}
		var err error
		if dict, err = c.dictionaryOf(ctx, f.dict, dict); err != nil {
			return err
		}
		if err := w.Begin(dict); err != nil {
			return err
		}
		seg := &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: digestList(f.dict)}}
		for _, r := range f.chunks {
			if data, err = c.cache.GetChunk(ctx, r.Digest, data[:0]); err != nil {
				return fmt.Errorf("chunk %s from the cache: %w", r.Digest, err)
			}
			if err := w.Add(r.Digest, data); err != nil {
				return err
			}
			bar.Add(int64(r.Size))
			if w.Buffered() >= chunkstream.SegmentBytes {
				if seg.Data, err = w.Flush(); err != nil {
					return err
				}
				if err := send(seg); err != nil {
					return err
				}
				seg = &nixcaspb.ChunkStreamSegment{}
			}
		}
		if seg.Data, err = w.End(); err != nil {
			return err
		}
		if err := send(seg); err != nil {
			return err
		}
	}
	if stream == nil {
		return nil
	}
	_, err := stream.CloseAndRecv()
	return err
}

// readFrames fetches the chunks of frames with one ReadChunks call asking
// for a chunk stream (or, with CompressionNone and CompressionMessages,
// for chunks), verifies and caches them, and returns the bytes received on
// the wire. A server that does not know chunk streams answers with chunks,
// which are taken as well.
func (c *Client) readFrames(ctx context.Context, frames []frame, bar Progress) (uint64, error) {
	var refs []castore.ChunkRef
	for _, f := range frames {
		refs = append(refs, f.chunks...)
	}
	req := &nixcaspb.ReadChunksRequest{Digests: digestList(refs), Decoded: c.opts.Compression != CompressionNone}
	if c.opts.Compression == CompressionStream {
		req.Stream = &nixcaspb.ChunkStreamRequest{Level: uint32(max(c.opts.WireLevel, 0))}
		for _, f := range frames {
			req.Stream.Frames = append(req.Stream.Frames, &nixcaspb.ChunkStreamFrame{Dictionary: digestList(f.dict), Chunks: uint32(len(f.chunks))})
		}
	}
	var wire atomic.Uint64
	stream, err := c.sync.ReadChunks(countWire(ctx, nil, &wire), req, c.chunkCallOptions()...)
	if err != nil {
		return 0, fmt.Errorf("client: reading chunks: %w", err)
	}
	first, err := stream.Recv()
	switch {
	case err == io.EOF:
		first = nil
	case err != nil:
		return wire.Load(), fmt.Errorf("client: reading chunks: %w", err)
	}
	if first.GetSegment() == nil {
		err = c.cacheChunks(ctx, first, stream, refs, bar)
	} else {
		err = c.cacheChunkStream(ctx, first, stream, frames, refs, bar)
	}
	return wire.Load(), err
}

// readSegments is the chunkstream.Source of a ReadChunks call: dictionary
// k is that of frames[k], read from the cache.
type readSegments struct {
	ctx    context.Context
	c      *Client
	first  *nixcaspb.ReadChunksResponse
	stream nixcaspb.SyncService_ReadChunksClient
	frames []frame
	k      int
	dicts  [2][]byte
}

func (s *readSegments) NextSegment() ([]byte, bool, []byte, error) {
	msg := s.first
	s.first = nil
	if msg == nil {
		var err error
		if msg, err = s.stream.Recv(); err != nil {
			return nil, false, nil, err
		}
	}
	if len(msg.GetChunks()) > 0 || msg.GetSegment() == nil {
		return nil, false, nil, fmt.Errorf("%w: client: the server mixed chunks into a chunk stream", castore.ErrCorrupt)
	}
	seg := msg.GetSegment()
	if seg.GetFrame() == nil {
		return seg.GetData(), false, nil, nil
	}
	if s.k == len(s.frames) {
		return nil, false, nil, fmt.Errorf("%w: client: the server sent more frames than asked", castore.ErrCorrupt)
	}
	buf := &s.dicts[s.k%2]
	dict, err := s.c.dictionaryOf(s.ctx, s.frames[s.k].dict, *buf)
	if err != nil {
		return nil, false, nil, err
	}
	*buf = dict
	s.k++
	return seg.GetData(), true, dict, nil
}

// cacheChunkStream receives the chunks refs as a chunk stream, first its
// first message, in order, verifies and caches them.
func (c *Client) cacheChunkStream(ctx context.Context, first *nixcaspb.ReadChunksResponse, stream nixcaspb.SyncService_ReadChunksClient, frames []frame, refs []castore.ChunkRef, bar Progress) error {
	r, err := chunkstream.NewReader(&readSegments{ctx: ctx, c: c, first: first, stream: stream, frames: frames})
	if err != nil {
		return err
	}
	defer r.Close()
	var stored []byte
	for next := 0; ; next++ {
		d, data, err := r.Next()
		if err == io.EOF {
			if next != len(refs) {
				return fmt.Errorf("%w: client: the server sent %d chunks of %d", castore.ErrCorrupt, next, len(refs))
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, castore.ErrCorrupt) || errors.Is(err, castore.ErrInvalid) || errors.Is(err, chunkstream.ErrLimit) {
				return fmt.Errorf("client: chunk stream from the server: %w", err)
			}
			return fmt.Errorf("client: reading chunks: %w", err)
		}
		if next == len(refs) {
			return fmt.Errorf("%w: client: the server sent more chunks than asked", castore.ErrCorrupt)
		}
		ref := refs[next]
		if d != ref.Digest || len(data) != int(ref.Size) {
			return fmt.Errorf("%w: client: the server sent chunk %s of %d bytes for %s of %d", castore.ErrCorrupt, d, len(data), ref.Digest, ref.Size)
		}
		stored = append(append(stored[:0], castore.CodecRaw), data...)
		if _, err := castore.PutEncoded(ctx, c.cache, d, stored); err != nil {
			return fmt.Errorf("client: chunk from the server: %w", err)
		}
		chunkCached(bar, ref)
	}
}
