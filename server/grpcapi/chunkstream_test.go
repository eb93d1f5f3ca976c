package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/castoretest"
	"github.com/nixcas/nixcas/internal/chunkstream"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// streamFrame is a frame to encode: its dictionary (the digests named and
// their bytes) and chunks.
type streamFrame struct {
	dict   [][]byte
	chunks [][]byte
}

// encodeStream returns the PutChunks messages of a chunk stream of
// frames, a segment per chunk.
func encodeStream(t *testing.T, frames []streamFrame) []*nixcaspb.PutChunksRequest {
	t.Helper()
	w, err := chunkstream.NewWriter(0)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*nixcaspb.PutChunksRequest
	for _, f := range frames {
		var dict []byte
		var digests [][]byte
		for _, c := range f.dict {
			dict = append(dict, c...)
			d := castore.Hash(c)
			digests = append(digests, raw(d))
		}
		if err := w.Begin(dict); err != nil {
			t.Fatal(err)
		}
		seg := &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: digests}}
		for i, c := range f.chunks {
			if err := w.Add(castore.Hash(c), c); err != nil {
				t.Fatal(err)
			}
			if i == len(f.chunks)-1 {
				break
			}
			if seg.Data, err = w.Flush(); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, &nixcaspb.PutChunksRequest{Segment: seg})
			seg = &nixcaspb.ChunkStreamSegment{}
		}
		if seg.Data, err = w.End(); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, &nixcaspb.PutChunksRequest{Segment: seg})
	}
	return msgs
}

// putChunkStream sends msgs on one PutChunks call.
func putChunkStream(ts *testServer, msgs []*nixcaspb.PutChunksRequest) (*nixcaspb.PutChunksResponse, error) {
	stream, err := ts.sync.PutChunks(context.Background())
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the server ended the call: CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

// rawSegment is one segment starting a frame, of zstd bytes made by hand.
func rawSegment(data []byte) *nixcaspb.PutChunksRequest {
	return &nixcaspb.PutChunksRequest{Segment: &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{}, Data: data}}
}

func zstdFrame(t *testing.T, content []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(content, nil)
}

func record(data []byte, digest castore.Digest, length int) []byte {
	out := append([]byte(nil), digest[:]...)
	out = binary.AppendUvarint(out, uint64(length))
	return append(out, data...)
}

// streamSource reads the segments of a ReadChunks call, with the
// dictionaries of the frames asked for.
type streamSource struct {
	stream nixcaspb.SyncService_ReadChunksClient
	dicts  [][]byte
	k      int
}

func (s *streamSource) NextSegment() ([]byte, bool, []byte, error) {
	msg, err := s.stream.Recv()
	if err != nil {
		return nil, false, nil, err
	}
	seg := msg.GetSegment()
	if seg.GetFrame() == nil {
		return seg.GetData(), false, nil, nil
	}
	var dict []byte
	if s.k < len(s.dicts) {
		dict = s.dicts[s.k]
	}
	s.k++
	return seg.GetData(), true, dict, nil
}

// readStream reads chunks as a chunk stream of the frames asked for.
func readStream(ts *testServer, digests [][]byte, frames []*nixcaspb.ChunkStreamFrame, dicts [][]byte) ([][]byte, error) {
	stream, err := ts.sync.ReadChunks(context.Background(), &nixcaspb.ReadChunksRequest{Digests: digests, Stream: &nixcaspb.ChunkStreamRequest{Frames: frames}})
	if err != nil {
		return nil, err
	}
	r, err := chunkstream.NewReader(&streamSource{stream: stream, dicts: dicts})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out [][]byte
	for i := 0; ; i++ {
		d, data, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if d != castore.Hash(data) || string(d[:]) != string(digests[i]) {
			return out, castore.ErrCorrupt
		}
		out = append(out, bytes.Clone(data))
	}
}

func TestChunkStream(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	resp, err := ts.sync.Missing(ctx, &nixcaspb.MissingRequest{})
	if err != nil || !resp.GetChunkStream() {
		t.Fatalf("Missing: %v, %v; want chunk_stream set", resp, err)
	}

	// The server holds base; the stream sends a near copy of it against
	// base as dictionary, then two more chunks in a frame of their own.
	base := castoretest.RandomBytes(10, 200<<10)
	castoretest.MustPutChunk(t, ts.store, base)
	near := bytes.Clone(base)
	near[1000] ^= 1
	chunks := [][]byte{near, castoretest.CompressibleBytes(50 << 10), castoretest.RandomBytes(11, 10)}
	msgs := encodeStream(t, []streamFrame{{dict: [][]byte{base}, chunks: chunks[:1]}, {chunks: chunks[1:]}})
	var wire int
	for _, m := range msgs {
		wire += len(m.GetSegment().GetData())
	}
	if wire > 10<<10 {
		t.Errorf("the stream has %d bytes: the dictionary did not serve", wire)
	}
	put, err := putChunkStream(ts, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if put.GetChunksAdded() != 3 {
		t.Errorf("PutChunks: %v, want 3 added", put)
	}
	digests := make([][]byte, len(chunks))
	for i, c := range chunks {
		d := castore.Hash(c)
		digests[i] = raw(d)
		castoretest.MustHaveChunk(t, ts.store, d, true)
	}

	// Back as a chunk stream: framed as asked, and as one frame.
	baseDigest := castore.Hash(base)
	reads := []struct {
		name   string
		frames []*nixcaspb.ChunkStreamFrame
		dicts  [][]byte
	}{
		{"two frames, the first with a dictionary", []*nixcaspb.ChunkStreamFrame{{Dictionary: [][]byte{raw(baseDigest)}, Chunks: 1}, {Chunks: 2}}, [][]byte{base, nil}},
		{"one frame", nil, nil},
	}
	for _, r := range reads {
		got, err := readStream(ts, digests, r.frames, r.dicts)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if len(got) != len(chunks) {
			t.Fatalf("%s: %d chunks, want %d", r.name, len(got), len(chunks))
		}
		for i := range chunks {
			if !bytes.Equal(got[i], chunks[i]) {
				t.Errorf("%s: chunk %d differs", r.name, i)
			}
		}
	}
	// A chunk stream and old-style chunks, in messages of one call, is
	// refused.
	var enc castore.ChunkEncoder
	mixed := encodeStream(t, []streamFrame{{chunks: chunks[:1]}})
	mixed[0].Chunks = []*nixcaspb.Chunk{{Digest: digests[1], Data: enc.Encode(nil, chunks[1])}}
	_, err = putChunkStream(ts, mixed)
	wantCode(t, "PutChunks with chunks and a stream in one message", err, codes.InvalidArgument)
	_, err = putChunkStream(ts, append([]*nixcaspb.PutChunksRequest{{Chunks: mixed[0].Chunks}}, encodeStream(t, []streamFrame{{chunks: chunks[:1]}})...))
	wantCode(t, "PutChunks with chunks, then a stream", err, codes.InvalidArgument)
}

func TestChunkStreamRefused(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	good := castoretest.RandomBytes(20, 100<<10)
	other := castoretest.RandomBytes(21, 100<<10)
	goodDigest := castore.Hash(good)
	// Three stored chunks of 11 MiB: a dictionary of all three is over
	// the 32 MiB bound.
	var big [][]byte
	for i := range 3 {
		b := bytes.Repeat([]byte{byte(i)}, 11<<20)
		castoretest.MustPutChunk(t, ts.store, b)
		d := castore.Hash(b)
		big = append(big, raw(d))
	}
	stream := encodeStream(t, []streamFrame{{chunks: [][]byte{good, good}}})
	flipped := stream[0].GetSegment().GetData()
	flipped = append([]byte(nil), flipped...)
	flipped[len(flipped)/2] ^= 0x40
	wrongDigest := record(other, goodDigest, len(other))
	missing := castore.Hash([]byte("not stored"))

	tests := []struct {
		name string
		msgs []*nixcaspb.PutChunksRequest
		want codes.Code
	}{
		{"corrupt zstd", []*nixcaspb.PutChunksRequest{rawSegment(flipped)}, codes.DataLoss},
		{"not zstd", []*nixcaspb.PutChunksRequest{rawSegment([]byte("plain bytes"))}, codes.DataLoss},
		{"cut inside a chunk", []*nixcaspb.PutChunksRequest{rawSegment(zstdFrame(t, record(good[:100], goodDigest, len(good))))}, codes.DataLoss},
		{"a chunk that is not its digest's", []*nixcaspb.PutChunksRequest{rawSegment(zstdFrame(t, wrongDigest))}, codes.DataLoss},
		{"first segment starts no frame", []*nixcaspb.PutChunksRequest{{Segment: &nixcaspb.ChunkStreamSegment{Data: stream[0].GetSegment().GetData()}}}, codes.DataLoss},
		{"chunk length over the limit", []*nixcaspb.PutChunksRequest{rawSegment(zstdFrame(t, record(nil, goodDigest, castore.MaxChunkSize+1)))}, codes.InvalidArgument},
		{"window over the limit", []*nixcaspb.PutChunksRequest{rawSegment(zstdFrame(t, bytes.Repeat(record(good, goodDigest, len(good)), 400), zstd.WithWindowSize(2*chunkstream.MaxWindow)))}, codes.ResourceExhausted},
		{"dictionary over the limit", []*nixcaspb.PutChunksRequest{{Segment: &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: big}, Data: stream[0].GetSegment().GetData()}}}, codes.InvalidArgument},
		{"dictionary chunk not stored", []*nixcaspb.PutChunksRequest{{Segment: &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: [][]byte{raw(missing)}}, Data: stream[0].GetSegment().GetData()}}}, codes.NotFound},
		{"dictionary digest too short", []*nixcaspb.PutChunksRequest{{Segment: &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: [][]byte{{1, 2}}}, Data: stream[0].GetSegment().GetData()}}}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := putChunkStream(ts, tt.msgs)
			wantCode(t, tt.name, err, tt.want)
			castoretest.MustHaveChunk(t, ts.store, goodDigest, false)
		})
	}

	castoretest.MustPutChunk(t, ts.store, good)
	reads := []struct {
		name   string
		frames []*nixcaspb.ChunkStreamFrame
		want   codes.Code
	}{
		{"frames of more chunks than asked", []*nixcaspb.ChunkStreamFrame{{Chunks: 2}}, codes.InvalidArgument},
		{"a frame of no chunks", []*nixcaspb.ChunkStreamFrame{{Chunks: 1}, {Chunks: 0}}, codes.InvalidArgument},
		{"dictionary chunk not stored", []*nixcaspb.ChunkStreamFrame{{Chunks: 1, Dictionary: [][]byte{raw(missing)}}}, codes.NotFound},
		{"dictionary over the limit", []*nixcaspb.ChunkStreamFrame{{Chunks: 1, Dictionary: big}}, codes.InvalidArgument},
	}
	for _, r := range reads {
		_, err := readStream(ts, [][]byte{raw(goodDigest)}, r.frames, nil)
		wantCode(t, "ReadChunks: "+r.name, err, r.want)
	}
	_, err := readStream(ts, [][]byte{raw(missing)}, nil, nil)
	wantCode(t, "ReadChunks of a chunk not stored", err, codes.NotFound)
}

// TestChunkStreamBoundedMemory sends streams built to make a server
// allocate without bound, and checks each is refused having allocated
// a bounded amount: a dictionary naming one 11 MiB chunk 65536 times
// (720 GiB if it were built), a frame header declaring a 1 TiB window, a
// chunk declaring 16 MiB and sending none.
func TestChunkStreamBoundedMemory(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	big := bytes.Repeat([]byte{7}, 11<<20)
	castoretest.MustPutChunk(t, ts.store, big)
	bigDigest := castore.Hash(big)
	manyDicts := make([][]byte, chunkstream.MaxDictionaryChunks)
	for i := range manyDicts {
		manyDicts[i] = raw(bigDigest)
	}
	var d castore.Digest
	tests := []struct {
		name string
		msg  *nixcaspb.PutChunksRequest
		want codes.Code
	}{
		{"dictionary naming one chunk 65536 times", &nixcaspb.PutChunksRequest{Segment: &nixcaspb.ChunkStreamSegment{Frame: &nixcaspb.ChunkStreamFrame{Dictionary: manyDicts}}}, codes.InvalidArgument},
		// Magic, then a frame header descriptor with a window descriptor
		// of exponent 30 (a 1 TiB window) and no content size.
		{"1 TiB window", rawSegment([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 30 << 3}), codes.ResourceExhausted},
		{"a 16 MiB chunk with no bytes", rawSegment(zstdFrame(t, record(nil, d, castore.MaxChunkSize))), codes.DataLoss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := putChunkStream(ts, []*nixcaspb.PutChunksRequest{tt.msg})
			runtime.ReadMemStats(&after)
			wantCode(t, tt.name, err, tt.want)
			// The whole process, client and server: the limit is the
			// 32 MiB dictionary bound plus a chunk, with slack for
			// growing buffers.
			if got := after.TotalAlloc - before.TotalAlloc; got > 256<<20 {
				t.Errorf("%s: %d MiB allocated", tt.name, got>>20)
			} else {
				t.Logf("%s: %d MiB allocated", tt.name, got>>20)
			}
		})
	}
}

// TestChunkStreamSlots: with one chunk stream slot, while a first chunk
// stream holds it, Missing does not offer chunk streams, a read asking for
// one gets chunks, and a second PutChunks stream waits (so a deadline ends
// it, nothing stored); it goes through once the first has ended.
func TestChunkStreamSlots(t *testing.T) {
	ts := startServer(t, grpcapi.Options{MaxChunkStreams: 1})
	a := castoretest.RandomBytes(30, 1000)
	b := castoretest.RandomBytes(31, 1000)
	first, err := ts.sync.PutChunks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msgs := encodeStream(t, []streamFrame{{chunks: [][]byte{a, a}}})
	if err := first.Send(msgs[0]); err != nil {
		t.Fatal(err)
	}
	// The server holds the first call's slot once it has decoded the
	// first chunk: wait for it to be stored.
	for ok := false; !ok; {
		var err error
		if ok, err = ts.store.HasChunk(context.Background(), castore.Hash(a)); err != nil {
			t.Fatal(err)
		}
	}
	// Meanwhile chunk streams are not offered, and a read asking for
	// one gets chunks.
	castoretest.MustPutChunk(t, ts.store, b)
	if resp, err := ts.sync.Missing(context.Background(), &nixcaspb.MissingRequest{}); err != nil || resp.GetChunkStream() {
		t.Errorf("Missing with every slot taken: %v, %v; want chunk_stream unset", resp, err)
	}
	reads, err := ts.sync.ReadChunks(context.Background(), &nixcaspb.ReadChunksRequest{Digests: [][]byte{raw(castore.Hash(b))}, Stream: &nixcaspb.ChunkStreamRequest{}})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := reads.Recv(); err != nil || len(msg.GetChunks()) != 1 || msg.GetSegment() != nil {
		t.Errorf("ReadChunks asking for a stream with every slot taken: %v, %v; want one chunk", msg, err)
	}
	if _, err := ts.store.DeleteChunk(context.Background(), castore.Hash(b)); err != nil {
		t.Fatal(err)
	}
	second := func(ctx context.Context) error {
		stream, err := ts.sync.PutChunks(ctx)
		if err != nil {
			return err
		}
		for _, m := range encodeStream(t, []streamFrame{{chunks: [][]byte{b}}}) {
			if err := stream.Send(m); err != nil {
				break
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	err = second(ctx)
	cancel()
	wantCode(t, "a second chunk stream while the first holds the only slot", err, codes.DeadlineExceeded)
	castoretest.MustHaveChunk(t, ts.store, castore.Hash(b), false)
	for _, m := range msgs[1:] {
		if err := first.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := first.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	if err := second(context.Background()); err != nil {
		t.Fatalf("the second chunk stream after the first ended: %v", err)
	}
	castoretest.MustHaveChunk(t, ts.store, castore.Hash(b), true)
}
