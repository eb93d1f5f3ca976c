package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/store"
)

// Options configure a Client. Cache is required.
type Options struct {
	// Token, when set, is sent with every call as "authorization: Bearer
	// <Token>".
	Token string
	// TLS, when set, secures the connection (see TLSConfig); it is plain
	// text otherwise.
	TLS *tls.Config
	// Cache is the local chunk cache: pushes read chunks from it, pulls
	// write chunks to it. It should implement castore.EncodedChunkStore,
	// so chunks travel in their stored form without being recompressed.
	Cache castore.Store
	// Streams is the number of parallel streams moving chunks (default 4).
	Streams int
	// Compression of the calls moving chunks: "zstd" (the default) sends
	// chunk streams, one zstd stream per call (see CompressionStream), or,
	// with servers that do not read them, compresses each message;
	// "zstd-messages" only compresses each message, chunks sent decoded;
	// "none" sends chunks in their stored form, lz4 where that helps,
	// which costs no CPU.
	Compression string
	// WireLevel is the zstd level of chunk streams, numbered as the zstd
	// command line numbers them: pushes encode at it, pulls ask the
	// server for it. 0 is chunkstream.DefaultLevel (klauspost/compress's
	// "better", zstd 6 to 9); 10 and above is its "best", slower.
	WireLevel int
	// NoFrames reads every chunk a pull lacks with ReadChunks, never a
	// whole frame as the server stores it (see Pull): for comparisons.
	NoFrames bool
	// Base, when set, is the tree whose files serve as dictionaries in
	// PushTree, PushClosure and Pull (see PushTreeFrom and PullFrom):
	// typically the previous version of what is moved, already on both
	// sides. SetBase changes it.
	Base *castore.Entry
	// AutoBase, when Base is not set, picks the base of each store path
	// PushClosure and PullPath move: the tree the cache remembers as the
	// last moved of the same family (see Family), typically the previous
	// version of the package, and remembers each path moved. Such a base
	// is used as Base is: missing from the cache, it is no base; its files
	// the server lacks are left out.
	AutoBase bool
	// Progress, when set, is called at the start of each long phase with
	// its name and its size in bytes, and its result told of the bytes
	// done.
	Progress func(what string, total int64) Progress
}

// Progress observes one phase of a transfer.
type Progress interface {
	// Add reports n more bytes done. It may be called from several
	// goroutines at once.
	Add(n int64)
	// Finish ends the phase.
	Finish()
}

type noProgress struct{}

func (noProgress) Add(int64) {}
func (noProgress) Finish()   {}

// maxMessageSize is the largest message the client sends or receives, as
// the server's (grpcapi.MaxMessageSize).
const maxMessageSize = 64 << 20

// Batch sizes: digests per request.
const (
	missingBatch   = 1 << 15
	statBlobsBatch = 1 << 13
	// minStatBlobsBatch: chunk lists are asked for in batches side by
	// side, each of at least this many blobs.
	minStatBlobsBatch = 1 << 12
	readBatch         = 1 << 11
	// readBatchBytes bounds the uncompressed bytes of one ReadChunks call.
	readBatchBytes = 32 << 20
	// putChunksMessage is the payload at which PutChunks sends a message.
	putChunksMessage = 1 << 20
	// putBlobsBatch bounds the chunk references of one PutBlobs call.
	putBlobsBatch = 1 << 16
	// putBlobsBytes bounds the bytes of multi-chunk blobs one PutBlobs
	// call makes the server verify, under the server's default budget
	// (grpcapi.DefaultMaxVerifyBytes).
	putBlobsBytes = 256 << 20
)

// Client talks to one nixcas server.
type Client struct {
	conn  *grpc.ClientConn
	dirs  castorepb.DirectoryServiceClient
	paths storepb.PathInfoServiceClient
	sync  nixcaspb.SyncServiceClient
	cache castore.Store
	opts  Options
	// serverStreams: the server's last Missing answer said it reads
	// chunk streams.
	serverStreams atomic.Bool
}

// Dial returns a client of the server at addr ("host:port", see
// ParseEndpoint for what users write). It does not wait for a connection:
// the first call makes one. The connection is plain text unless
// Options.TLS is set; close the Client when done.
func Dial(addr string, o Options) (*Client, error) {
	if o.Cache == nil {
		return nil, errors.New("client: Options.Cache is required")
	}
	if o.Streams <= 0 {
		o.Streams = 4
	}
	switch o.Compression {
	case "":
		o.Compression = nixcaspb.Zstd
	case CompressionStream, CompressionMessages, CompressionNone:
	default:
		return nil, fmt.Errorf("client: compression %q: want zstd, zstd-messages or none", o.Compression)
	}
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize)),
		grpc.WithStatsHandler(wireCounter{}),
		// Reconnect within 10 s of a server coming back (gRPC's default
		// backoff grows to 2 minutes), so a proxy recovers promptly.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 10 * time.Second},
			MinConnectTimeout: 20 * time.Second,
		}),
	}
	if o.Token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: %s: %w", addr, err)
	}
	return &Client{
		conn:  conn,
		dirs:  castorepb.NewDirectoryServiceClient(conn),
		paths: storepb.NewPathInfoServiceClient(conn),
		sync:  nixcaspb.NewSyncServiceClient(conn),
		cache: o.Cache,
		opts:  o,
	}, nil
}

// SetBase sets Options.Base. Call it before a transfer, not during one.
func (c *Client) SetBase(base *castore.Entry) { c.opts.Base = base }

// Close closes the connection; it does not close the cache.
func (c *Client) Close() error { return c.conn.Close() }

// Conn returns the client's connection, for calling other services on it.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

func (c *Client) progress(what string, total int64) Progress {
	if c.opts.Progress == nil {
		return noProgress{}
	}
	return c.opts.Progress(what, total)
}

// bearer sends a bearer token with every call. It does not ask for
// transport security: nixcas serve itself listens in plain text.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// GetPathInfo returns the server's PathInfo of a store path.
func (c *Client) GetPathInfo(ctx context.Context, d store.PathDigest) (*store.PathInfo, error) {
	pb, err := c.paths.Get(ctx, &storepb.GetPathInfoRequest{ByWhat: &storepb.GetPathInfoRequest_ByOutputHash{ByOutputHash: d[:]}})
	if err != nil {
		return nil, fmt.Errorf("client: path info %s: %w", d, err)
	}
	p, err := store.PathInfoFromProto(pb)
	if err != nil {
		return nil, fmt.Errorf("client: path info %s from the server: %w", d, err)
	}
	return p, nil
}

// PutPathInfo records p on the server, which checks it against the tree
// it holds; push the tree first. It returns what the server recorded.
func (c *Client) PutPathInfo(ctx context.Context, p *store.PathInfo) (*store.PathInfo, error) {
	pb, err := c.paths.Put(ctx, p.ToProto())
	if err != nil {
		return nil, fmt.Errorf("client: putting path info %s: %w", p.Path, err)
	}
	got, err := store.PathInfoFromProto(pb)
	if err != nil {
		return nil, fmt.Errorf("client: path info %s from the server: %w", p.Path, err)
	}
	return got, nil
}

// chunkCallOptions are the options of the calls moving chunks.
func (c *Client) chunkCallOptions() []grpc.CallOption {
	if c.opts.Compression != CompressionNone {
		return []grpc.CallOption{grpc.UseCompressor(nixcaspb.Zstd)}
	}
	return nil
}

// wireCounter counts the bytes of a call's messages on the wire
// (compressed, with gRPC framing) into the counters its context carries.
type wireCounter struct{}

type wireKey struct{}

// wireCounts are the counters of a call: bytes sent and received.
type wireCounts struct{ out, in *atomic.Uint64 }

// countWire returns ctx carrying counters for the calls made with it;
// either may be nil.
func countWire(ctx context.Context, out, in *atomic.Uint64) context.Context {
	return context.WithValue(ctx, wireKey{}, wireCounts{out: out, in: in})
}

func (wireCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (wireCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	w, ok := ctx.Value(wireKey{}).(wireCounts)
	if !ok {
		return
	}
	switch p := s.(type) {
	case *stats.OutPayload:
		if w.out != nil {
			w.out.Add(uint64(p.WireLength))
		}
	case *stats.InPayload:
		if w.in != nil {
			w.in.Add(uint64(p.WireLength))
		}
	}
}

func (wireCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (wireCounter) HandleConn(context.Context, stats.ConnStats) {}
