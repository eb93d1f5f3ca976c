package grpcapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
)

// readPiece is the most blob data one BlobChunk message carries.
const readPiece = 1 << 20

// blobService implements snix.castore.v1.BlobService.
type blobService struct {
	castorepb.UnimplementedBlobServiceServer
	cas    countingStore
	writer castore.WriterOptions
}

// Stat reports a blob: one with a chunk list (listed when send_chunks is
// set), or one stored as a single chunk (an empty list). Bao is not
// supported and never sent.
func (b *blobService) Stat(ctx context.Context, req *castorepb.StatBlobRequest) (*castorepb.StatBlobResponse, error) {
	d, err := digestArg(req.GetDigest(), "digest")
	if err != nil {
		return nil, err
	}
	refs, err := blobIndex(ctx, b.cas, d)
	if err != nil {
		return nil, err
	}
	resp := &castorepb.StatBlobResponse{}
	if req.GetSendChunks() {
		for _, r := range refs {
			resp.Chunks = append(resp.Chunks, &castorepb.StatBlobResponse_ChunkMeta{Digest: r.Digest[:], Size: uint64(r.Size)})
		}
	}
	return resp, nil
}

// blobIndex returns the chunk list of blob d, nil when it is stored as one
// chunk, or an ErrNotFound error.
func blobIndex(ctx context.Context, s castore.BlobSource, d castore.Digest) ([]castore.ChunkRef, error) {
	refs, err := s.GetBlobIndex(ctx, d)
	if err == nil {
		return refs, nil
	}
	if !errors.Is(err, castore.ErrNotFound) {
		return nil, err
	}
	ok, err := s.HasChunk(ctx, d)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: blob %s", castore.ErrNotFound, d)
	}
	return nil, nil
}

// Read streams a blob, or any chunk, in pieces of at most readPiece bytes.
// A multi-chunk blob is checked against its digest as it is read: a
// mismatch (damaged storage) ends the stream with DATA_LOSS.
func (b *blobService) Read(req *castorepb.ReadBlobRequest, stream castorepb.BlobService_ReadServer) error {
	ctx := stream.Context()
	d, err := digestArg(req.GetDigest(), "digest")
	if err != nil {
		return err
	}
	refs, err := blobIndex(ctx, b.cas, d)
	if err != nil {
		return err
	}
	var r io.Reader
	if refs == nil {
		data, err := b.cas.GetChunk(ctx, d, nil)
		if err != nil {
			return err
		}
		r = bytes.NewReader(data)
	} else {
		var size uint64
		for _, c := range refs {
			size += uint64(c.Size)
		}
		br, err := castore.OpenBlob(ctx, b.cas, d, size)
		if err != nil {
			return err
		}
		defer br.Close()
		r = br
	}
	buf := make([]byte, readPiece)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&castorepb.BlobChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return nil
		default:
			return err
		}
	}
}

// Put receives a blob, cuts it into chunks as it arrives (castore.Writer,
// which hashes every chunk it stores) and records it once every chunk is
// stored and synced.
func (b *blobService) Put(stream castorepb.BlobService_PutServer) error {
	ctx := stream.Context()
	w, err := castore.NewWriter(b.cas, b.writer)
	if err != nil {
		return err
	}
	defer w.Close()
	d, _, err := w.WriteBlob(ctx, &blobStreamReader{stream: stream})
	if err != nil {
		return err
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	if err := b.cas.Sync(ctx); err != nil {
		return err
	}
	return stream.SendAndClose(&castorepb.PutBlobResponse{Digest: d[:]})
}

// blobStreamReader reads the data of a stream of BlobChunk messages.
type blobStreamReader struct {
	stream castorepb.BlobService_PutServer
	cur    []byte
}

func (r *blobStreamReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		r.cur = msg.GetData()
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}
