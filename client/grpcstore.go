package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
)

// GRPCStore is a castore.ReadStore over a nixcas server: chunks come from
// nixcas.v1 ReadChunks (HasChunk from Missing), chunk lists from
// StatBlobs, directories from the snix DirectoryService. Everything
// received is verified before it is returned: a chunk against its digest,
// a directory against its digest (and validated), a chunk list against
// the sizes of its entries. A server's NOT_FOUND is castore.ErrNotFound;
// other failures keep their gRPC status, so Transient tells which are
// worth retrying (wrap.Retrying). It keeps nothing: compose it with
// wrap.ReadThrough for a local copy. Safe for concurrent use.
type GRPCStore struct {
	dirs     castorepb.DirectoryServiceClient
	sync     nixcaspb.SyncServiceClient
	callOpts []grpc.CallOption
	decoded  bool // ask for chunks coded raw, for a compressing transport
	// received counts the bytes received on the wire, when the connection
	// counts them (a Client's does); onReceived, when set, is told each
	// call's.
	received   atomic.Uint64
	onReceived func(n uint64)
}

var _ castore.ReadStore = (*GRPCStore)(nil)

// Remote returns the client's server as a castore.ReadStore, over the
// client's connection (with its token, TLS and compression).
func (c *Client) Remote() *GRPCStore {
	return &GRPCStore{dirs: c.dirs, sync: c.sync, callOpts: c.chunkCallOptions(), decoded: c.opts.Compression != CompressionNone}
}

// NewGRPCStore returns a GRPCStore over conn; the caller closes conn.
func NewGRPCStore(conn grpc.ClientConnInterface) *GRPCStore {
	return &GRPCStore{
		dirs:     castorepb.NewDirectoryServiceClient(conn),
		sync:     nixcaspb.NewSyncServiceClient(conn),
		callOpts: []grpc.CallOption{grpc.UseCompressor(nixcaspb.Zstd)},
		decoded:  true,
	}
}

// BytesReceived returns the bytes the store's calls have received on the
// wire (compressed, with gRPC framing), over a Client's connection.
func (g *GRPCStore) BytesReceived() uint64 { return g.received.Load() }

// OnReceived makes g call fn at the end of each call with the bytes it
// received on the wire (over a Client's connection), and returns g. Call
// it before g is used.
func (g *GRPCStore) OnReceived(fn func(n uint64)) *GRPCStore {
	g.onReceived = fn
	return g
}

// counted returns ctx counting the call's wire bytes, and the function
// that adds them up once the call is over.
func (g *GRPCStore) counted(ctx context.Context) (context.Context, func()) {
	n := new(atomic.Uint64)
	return countWire(ctx, nil, n), func() {
		v := n.Load()
		g.received.Add(v)
		if g.onReceived != nil {
			g.onReceived(v)
		}
	}
}

// Transient reports whether err is a gRPC failure worth retrying:
// unavailable, deadline exceeded, resource exhausted, aborted.
func Transient(err error) bool { return transient(err) }

// remoteError translates a call's error: NOT_FOUND becomes
// castore.ErrNotFound for what, others are wrapped keeping their status.
func remoteError(err error, what string) error {
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%w: %s (upstream: %v)", castore.ErrNotFound, what, status.Convert(err).Message())
	}
	return fmt.Errorf("client: upstream: %s: %w", what, err)
}

// HasChunk implements castore.ChunkReader with one Missing call.
func (g *GRPCStore) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	ctx, done := g.counted(ctx)
	defer done()
	resp, err := g.sync.Missing(ctx, &nixcaspb.MissingRequest{Chunks: [][]byte{d[:]}})
	if err != nil {
		return false, remoteError(err, "chunk "+d.String())
	}
	switch m := resp.GetChunks(); {
	case len(m) == 0:
		return true, nil
	case len(m) == 1 && m[0] == 0:
		return false, nil
	default:
		return false, fmt.Errorf("%w: client: the upstream answered Missing of one chunk with indexes %v", castore.ErrCorrupt, m)
	}
}

// GetChunk implements castore.ChunkReader with one ReadChunks call, the
// chunk verified against d.
func (g *GRPCStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	ctx, done := g.counted(ctx)
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream
	stream, err := g.sync.ReadChunks(ctx, &nixcaspb.ReadChunksRequest{Digests: [][]byte{d[:]}, Decoded: g.decoded}, g.callOpts...)
	if err != nil {
		return dst, remoteError(err, "chunk "+d.String())
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return dst, fmt.Errorf("%w: client: the upstream did not send chunk %s", castore.ErrCorrupt, d)
		}
		if err != nil {
			return dst, remoteError(err, "chunk "+d.String())
		}
		for _, ch := range msg.GetChunks() {
			if string(ch.GetDigest()) != string(d[:]) {
				return dst, fmt.Errorf("%w: client: the upstream sent chunk %x for %s", castore.ErrCorrupt, ch.GetDigest(), d)
			}
			out, err := castore.DecodeChunk(dst, ch.GetData())
			if err != nil {
				return dst, fmt.Errorf("client: chunk %s from the upstream: %w", d, err)
			}
			if _, err := castore.VerifyChunk(d, out[len(dst):]); err != nil {
				return dst, fmt.Errorf("client: from the upstream: %w", err)
			}
			return out, nil
		}
	}
}

// GetBlobIndex implements castore.BlobIndexReader with one StatBlobs
// call. A blob of one chunk has no index: ErrNotFound.
func (g *GRPCStore) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	ctx, done := g.counted(ctx)
	defer done()
	resp, err := g.sync.StatBlobs(ctx, &nixcaspb.StatBlobsRequest{Digests: [][]byte{d[:]}})
	if err != nil {
		return nil, remoteError(err, "blob "+d.String())
	}
	if len(resp.GetBlobs()) != 1 || string(resp.GetBlobs()[0].GetDigest()) != string(d[:]) {
		return nil, fmt.Errorf("%w: client: the upstream answered StatBlobs of %s with something else", castore.ErrCorrupt, d)
	}
	pb := resp.GetBlobs()[0]
	switch len(pb.GetChunks()) {
	case 0:
		return nil, fmt.Errorf("%w: blob index %s (a blob of one chunk)", castore.ErrNotFound, d)
	case 1:
		return nil, fmt.Errorf("%w: client: the upstream sent a chunk list of one chunk for blob %s", castore.ErrCorrupt, d)
	}
	refs := make([]castore.ChunkRef, len(pb.GetChunks()))
	for i, ch := range pb.GetChunks() {
		cd, err := castore.DigestFromBytes(ch.GetDigest())
		if err != nil || ch.GetSize() > castore.MaxChunkSize {
			return nil, fmt.Errorf("%w: client: upstream chunk list of blob %s: entry %d", castore.ErrCorrupt, d, i)
		}
		refs[i] = castore.ChunkRef{Digest: cd, Size: ch.GetSize()}
	}
	return refs, nil
}

// GetDirectory implements castore.DirectoryReader with one
// DirectoryService.Get call, the directory checked against d.
func (g *GRPCStore) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	ctx, done := g.counted(ctx)
	defer done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := g.dirs.Get(ctx, &castorepb.GetDirectoryRequest{
		ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d[:]},
	})
	if err != nil {
		return nil, remoteError(err, "directory "+d.String())
	}
	msg, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: directory %s", castore.ErrNotFound, d)
	}
	if err != nil {
		return nil, remoteError(err, "directory "+d.String())
	}
	dir, err := castore.DirectoryFromProto(msg)
	if err != nil {
		return nil, fmt.Errorf("client: directory %s from the upstream: %w", d, err)
	}
	if got := dir.Digest(); got != d {
		return nil, fmt.Errorf("%w: client: the upstream sent directory %s for %s", castore.ErrCorrupt, got, d)
	}
	return dir, nil
}
