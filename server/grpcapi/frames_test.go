package grpcapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// readFrames reads the frames names with one ReadFrames call.
func readFrames(ts *testServer, names ...[]byte) ([][]byte, error) {
	stream, err := ts.sync.ReadFrames(context.Background(), &nixcaspb.ReadFramesRequest{Names: names})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if f := msg.GetFrame(); f != nil {
			if !bytes.Equal(f.GetName(), names[len(out)]) {
				return out, io.ErrUnexpectedEOF
			}
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], msg.GetData()...)
	}
}

// TestFrameCalls: ChunkPlaces places every chunk in its frame or in none,
// lists each frame once with its sizes (a client that decodes no filtered
// frame, as before frame formats, is sent none and every chunk in none),
// and ReadFrames sends the frames as stored, the chunks at their places; requests over the limits, of
// malformed or unknown digests, and frames damaged on disk are refused
// with the codes the protocol names.
func TestFrameCalls(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	var datas [][]byte
	for i := range 40 {
		datas = append(datas, randomBytes(byte(i), 60<<10)) // about 2.3 MiB: several 1 MiB frames
	}
	refs := putChunks(t, ts, datas...)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	late := putChunks(t, ts, []byte("stored after packing"))[0]
	req := &nixcaspb.ChunkPlacesRequest{}
	for _, r := range append(refs, late) {
		req.Digests = append(req.Digests, raw(r.Digest))
	}
	resp, err := ts.sync.ChunkPlaces(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetFrames()) != 0 {
		t.Errorf("a client of plain frames only was sent %d filtered frames", len(resp.GetFrames()))
	}
	for i, p := range resp.GetPlaces() {
		if p.GetFrame() != 0 {
			t.Fatalf("a client of plain frames only was sent chunk %d in frame %d", i, p.GetFrame())
		}
	}
	req.FrameFormat = nixcaspb.FrameFormatCallFilter
	if resp, err = ts.sync.ChunkPlaces(ctx, req); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPlaces()) != len(refs)+1 || len(resp.GetFrames()) < 2 {
		t.Fatalf("%d places for %d chunks, in %d frames", len(resp.GetPlaces()), len(refs)+1, len(resp.GetFrames()))
	}
	if p := resp.GetPlaces()[len(refs)]; p.GetFrame() != 0 {
		t.Errorf("a chunk not packed placed in frame %d", p.GetFrame())
	}
	var names [][]byte
	seen := map[string]bool{}
	for _, f := range resp.GetFrames() {
		if seen[string(f.GetName())] {
			t.Errorf("frame %x listed twice", f.GetName())
		}
		seen[string(f.GetName())] = true
		names = append(names, f.GetName())
	}
	objs, err := readFrames(ts, names...)
	if err != nil || len(objs) != len(names) {
		t.Fatalf("ReadFrames: %d frames, %v", len(objs), err)
	}
	decoded := make([][]byte, len(objs))
	for i, obj := range objs {
		f := resp.GetFrames()[i]
		h := castore.Hash(obj)
		if !bytes.Equal(h[:], f.GetName()) || uint64(len(obj)) != f.GetStoredSize() {
			t.Fatalf("frame %x: %d bytes hashing to %s; listed with %d", f.GetName(), len(obj), h, f.GetStoredSize())
		}
		if decoded[i], err = pebblestore.DecodeFrame(h, obj, nil); err != nil || uint64(len(decoded[i])) != f.GetDecodedSize() {
			t.Fatalf("frame %x decodes to %d bytes, %v; listed with %d", f.GetName(), len(decoded[i]), err, f.GetDecodedSize())
		}
	}
	for i, p := range resp.GetPlaces()[:len(refs)] {
		if p.GetFrame() == 0 || int(p.GetFrame()) > len(decoded) || p.GetLength() != refs[i].Size {
			t.Fatalf("chunk %d placed at %+v", i, p)
		}
		if got := decoded[p.GetFrame()-1][p.GetOffset() : p.GetOffset()+p.GetLength()]; !bytes.Equal(got, datas[i]) {
			t.Fatalf("chunk %d differs at its place %+v", i, p)
		}
	}

	many := func(n, size int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = make([]byte, size)
		}
		return out
	}
	var unknown castore.Digest
	unknown[0] = 1
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"ChunkPlaces of a missing chunk", func() error {
			_, err := ts.sync.ChunkPlaces(ctx, &nixcaspb.ChunkPlacesRequest{Digests: [][]byte{unknown[:]}})
			return err
		}, codes.NotFound},
		{"ChunkPlaces of a digest of 31 bytes", func() error {
			_, err := ts.sync.ChunkPlaces(ctx, &nixcaspb.ChunkPlacesRequest{Digests: many(1, 31)})
			return err
		}, codes.InvalidArgument},
		{"ChunkPlaces of 65537 digests", func() error {
			_, err := ts.sync.ChunkPlaces(ctx, &nixcaspb.ChunkPlacesRequest{Digests: many(grpcapi.MaxBatch+1, 32)})
			return err
		}, codes.InvalidArgument},
		{"ReadFrames of 4097 frames", func() error { _, err := readFrames(ts, many(grpcapi.MaxReadFrames+1, 32)...); return err }, codes.InvalidArgument},
		{"ReadFrames of a name of 33 bytes", func() error { _, err := readFrames(ts, many(1, 33)...); return err }, codes.InvalidArgument},
		{"ReadFrames of an unknown frame", func() error { _, err := readFrames(ts, names[0], unknown[:]); return err }, codes.NotFound},
		{"ReadFrames of a chunk's digest", func() error { _, err := readFrames(ts, raw(refs[0].Digest)); return err }, codes.NotFound},
	} {
		wantCode(t, tc.name, tc.call(), tc.want)
	}

	// A frame damaged on disk: DATA_LOSS naming it.
	name := castore.Digest(names[1])
	path := filepath.Join(ts.store.Dir(), "frames", name.String()[:2], name.String())
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x08
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = readFrames(ts, names...)
	wantCode(t, "ReadFrames of a damaged frame", err, codes.DataLoss)
	if err == nil || !strings.Contains(err.Error(), name.String()) {
		t.Errorf("error %v does not name frame %s", err, name)
	}
}

// packedFrames puts 60 chunks of 60 KiB of random bytes into ts's store,
// packs them, and returns the names of the frames (at least 3) holding
// them.
func packedFrames(t *testing.T, ts *testServer) [][]byte {
	t.Helper()
	ctx := context.Background()
	var datas [][]byte
	for i := range 60 {
		datas = append(datas, randomBytes(byte(i), 60<<10))
	}
	refs := putChunks(t, ts, datas...)
	if err := ts.store.PackPending(ctx); err != nil {
		t.Fatal(err)
	}
	req := &nixcaspb.ChunkPlacesRequest{FrameFormat: nixcaspb.FrameFormatCallFilter}
	for _, r := range refs {
		req.Digests = append(req.Digests, raw(r.Digest))
	}
	resp, err := ts.sync.ChunkPlaces(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var names [][]byte
	for _, f := range resp.GetFrames() {
		names = append(names, f.GetName())
	}
	if len(names) < 3 {
		t.Fatalf("%d frames, want at least 3", len(names))
	}
	return names
}

// TestReadFramesConcurrently: calls reading the same frames at once, each
// several times, receive every frame as stored, while the server reads
// frames into the buffers of frames it sent before.
func TestReadFramesConcurrently(t *testing.T) {
	ts := startServer(t, grpcapi.Options{})
	names := packedFrames(t, ts)
	const calls, rounds = 4, 5
	errs := make(chan error, calls)
	for c := range calls {
		go func() {
			for r := range rounds {
				// Each call starts at another frame.
				order := append(append([][]byte(nil), names[(c+r)%len(names):]...), names[:(c+r)%len(names)]...)
				objs, err := readFrames(ts, order...)
				if err == nil && len(objs) != len(order) {
					err = fmt.Errorf("%d frames of %d", len(objs), len(order))
				}
				for i, obj := range objs {
					if h := castore.Hash(obj); err == nil && !bytes.Equal(h[:], order[i]) {
						err = fmt.Errorf("frame %x received as %d bytes hashing to %s", order[i], len(obj), h)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("call %d, round %d: %w", c, r, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range calls {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestReadFramesCanceled: a call canceled after its first message leaves
// the server sending the next calls' frames as stored.
func TestReadFramesCanceled(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, grpcapi.Options{})
	names := packedFrames(t, ts)
	for range 5 {
		cctx, cancel := context.WithCancel(ctx)
		stream, err := ts.sync.ReadFrames(cctx, &nixcaspb.ReadFramesRequest{Names: names})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		cancel()
		objs, err := readFrames(ts, names...)
		if err != nil || len(objs) != len(names) {
			t.Fatalf("after a canceled call: %d frames of %d, %v", len(objs), len(names), err)
		}
		for i, obj := range objs {
			if h := castore.Hash(obj); !bytes.Equal(h[:], names[i]) {
				t.Fatalf("after a canceled call: frame %x received as %d bytes hashing to %s", names[i], len(obj), h)
			}
		}
	}
}
