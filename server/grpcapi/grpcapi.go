package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/internal/chunkstream"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/server/auth"
	"github.com/nixcas/nixcas/store"
)

// Options configure the services. CAS and Index are required.
type Options struct {
	// CAS keeps chunks, blobs and directories. When it implements
	// castore.EncodedChunkStore, chunks travel in their stored form.
	CAS castore.Store
	// Index keeps the PathInfos, over the trees in CAS.
	Index *store.Index
	// PushToken, when set, is the bearer token every write needs.
	PushToken string
	// ReadToken, when set, is the bearer token every read needs (the push
	// token is accepted too). With a read token and no push token, writes
	// are refused.
	ReadToken string
	// RefuseAnonymousWrites refuses writes when no push token is set.
	RefuseAnonymousWrites bool
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Writer configures the chunking of blobs uploaded with
	// BlobService.Put.
	Writer castore.WriterOptions
	// MaxVerifyBytes bounds the chunk bytes one request may make the
	// server read to check a claim: the blobs of a PutBlobs call, the NAR
	// of a PathInfoService.Put or CalculateNAR (0: DefaultMaxVerifyBytes;
	// negative: no bound).
	MaxVerifyBytes int64
	// Tree bounds the expanded tree of every root the services accept
	// (DirectoryService.Put, PathInfoService.Put) or render
	// (CalculateNAR); zero fields take castore's defaults (10 million
	// entries, 1 TiB of files, 65,536 levels).
	Tree castore.TreeLimits
	// MaxPutDirectoryBytes bounds the memory one DirectoryService.Put
	// stream may hold (its directories are kept until the stream is
	// validated); default DefaultMaxPutDirectoryBytes.
	MaxPutDirectoryBytes int64
	// MaxPutDirectoryBytesTotal bounds that memory over all the Put
	// streams at once; a stream that would pass it is refused with
	// RESOURCE_EXHAUSTED. Default DefaultMaxPutDirectoryBytesTotal.
	MaxPutDirectoryBytesTotal int64
	// RenderTimeout bounds each NAR render the services do
	// (CalculateNAR, checking a PathInfo's NAR hash); default
	// DefaultRenderTimeout.
	RenderTimeout time.Duration
	// MaxChunkStreams bounds the SyncService calls moving a chunk stream
	// at once, each holding up to about 100 MiB (a zstd window and two
	// dictionaries of internal/chunkstream.MaxWindow, or an encoder of
	// that window). When all are taken, Missing stops offering chunk
	// streams, ReadChunks answers with chunks (which clients asking for a
	// stream take too), and a PutChunks stream waits for one to end.
	// Default DefaultMaxChunkStreams.
	MaxChunkStreams int
}

// DefaultMaxVerifyBytes is Options.MaxVerifyBytes when it is 0: above the
// NAR of any real store path (a PathInfo put renders and hashes its whole
// NAR), while a request of a few KB listing one chunk over and over is
// still refused before the server hashes more than a minute's worth.
const DefaultMaxVerifyBytes = 64 << 30

// ErrTooMuchWork is wrapped by errors refusing a request that would make
// the server read more than Options.MaxVerifyBytes (RESOURCE_EXHAUSTED).
var ErrTooMuchWork = errors.New("grpcapi: request over the verification budget")

// Defaults of the Options limits.
const (
	DefaultMaxPutDirectoryBytes      = 256 << 20
	DefaultMaxPutDirectoryBytesTotal = 1 << 30
	DefaultRenderTimeout             = 10 * time.Minute
	DefaultMaxChunkStreams           = 8
)

// withDefaults fills in the zero limits and checks the others.
func (o Options) withDefaults() (Options, error) {
	if o.MaxPutDirectoryBytes == 0 {
		o.MaxPutDirectoryBytes = DefaultMaxPutDirectoryBytes
	}
	if o.MaxPutDirectoryBytesTotal == 0 {
		o.MaxPutDirectoryBytesTotal = DefaultMaxPutDirectoryBytesTotal
	}
	if o.RenderTimeout == 0 {
		o.RenderTimeout = DefaultRenderTimeout
	}
	if o.MaxChunkStreams == 0 {
		o.MaxChunkStreams = DefaultMaxChunkStreams
	}
	o.Tree = o.Tree.WithDefaults()
	switch {
	case o.MaxChunkStreams < 0:
		return o, fmt.Errorf("grpcapi: chunk stream limit %d: must not be negative", o.MaxChunkStreams)
	case o.MaxPutDirectoryBytes < 0 || o.MaxPutDirectoryBytesTotal < 0:
		return o, fmt.Errorf("grpcapi: directory memory limits %d and %d: must not be negative", o.MaxPutDirectoryBytes, o.MaxPutDirectoryBytesTotal)
	case o.RenderTimeout < 0:
		return o, fmt.Errorf("grpcapi: render timeout %v: must not be negative", o.RenderTimeout)
	}
	if err := o.Tree.Validate(); err != nil {
		return o, fmt.Errorf("grpcapi: %w", err)
	}
	return o, nil
}

// errBusy is wrapped by errors about a request that needs more of a
// shared resource than is left; it maps to RESOURCE_EXHAUSTED.
var errBusy = errors.New("grpcapi: resource exhausted")

// MaxMessageSize is the largest message the server receives or sends;
// clients should allow as much.
const MaxMessageSize = 64 << 20

// MaxBatch is the largest number of digests one SyncService request may
// list.
const MaxBatch = 1 << 16

// tvixNames are the older names of the snix services.
var tvixNames = map[string]string{
	castorepb.BlobService_ServiceDesc.ServiceName:      "tvix.castore.v1.BlobService",
	castorepb.DirectoryService_ServiceDesc.ServiceName: "tvix.castore.v1.DirectoryService",
	storepb.PathInfoService_ServiceDesc.ServiceName:    "tvix.store.v1.PathInfoService",
}

// writeMethods are the methods that change the store, by service (without
// its package) and method name.
var writeMethods = map[string]bool{
	"BlobService/Put":       true,
	"DirectoryService/Put":  true,
	"PathInfoService/Put":   true,
	"SyncService/PutChunks": true,
	"SyncService/PutBlobs":  true,
}

// isWrite reports whether the full method name ("/pkg.Service/Method")
// names a write.
func isWrite(fullMethod string) bool {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if i := strings.LastIndexByte(svc, '.'); i >= 0 {
		svc = svc[i+1:]
	}
	return writeMethods[svc+"/"+method]
}

// NewServer returns a gRPC server with every service registered (the snix
// services under their snix.* and tvix.* names, and nixcas.v1.SyncService)
// behind the metrics, authentication and error-mapping interceptors. The
// extra options are applied after the server's own; they must not force
// another codec: ReadFrames sends messages only the server's own codec
// encodes (serverCodec).
func NewServer(o Options, extra ...grpc.ServerOption) (*grpc.Server, error) {
	if o.CAS == nil || o.Index == nil {
		return nil, errors.New("grpcapi: Options.CAS and Options.Index are required")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	a := authorizer{auth.New(auth.Policy{PushToken: o.PushToken, ReadToken: o.ReadToken, RefuseAnonymousWrites: o.RefuseAnonymousWrites})}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.StatsHandler(m),
		serverCodecOption,
		grpc.ChainUnaryInterceptor(m.unary, a.unary, mapErrorsUnary),
		grpc.ChainStreamInterceptor(m.stream, a.stream, mapErrorsStream),
	}
	s := grpc.NewServer(append(opts, extra...)...)
	cas := countingStore{Store: o.CAS, m: m}
	register := func(desc *grpc.ServiceDesc, impl any) {
		s.RegisterService(desc, impl)
		if alias, ok := tvixNames[desc.ServiceName]; ok {
			d := *desc
			d.ServiceName = alias
			s.RegisterService(&d, impl)
		}
	}
	register(&castorepb.BlobService_ServiceDesc, &blobService{cas: cas, writer: o.Writer})
	register(&castorepb.DirectoryService_ServiceDesc, &directoryService{
		cas:       o.CAS,
		limits:    o.Tree,
		maxStream: o.MaxPutDirectoryBytes,
		held:      &byteBudget{max: o.MaxPutDirectoryBytesTotal},
	})
	var maxVerify uint64
	switch {
	case o.MaxVerifyBytes == 0:
		maxVerify = DefaultMaxVerifyBytes
	case o.MaxVerifyBytes > 0:
		maxVerify = uint64(o.MaxVerifyBytes)
	}
	register(&storepb.PathInfoService_ServiceDesc, &pathInfoService{cas: o.CAS, index: o.Index, maxVerify: maxVerify, m: m, limits: o.Tree, timeout: o.RenderTimeout})
	register(&nixcaspb.SyncService_ServiceDesc, &syncService{cas: cas, maxVerify: maxVerify, streams: make(chan struct{}, o.MaxChunkStreams), frameReads: newFrameReads()})
	for name, info := range s.GetServiceInfo() {
		for _, mi := range info.Methods {
			m.known["/"+name+"/"+mi.Name] = true
		}
	}
	return s, nil
}

// countingStore counts chunk puts in the metrics, those of chunks in
// their stored form too (it is a castore.EncodedChunkStore, so that
// castore.PutEncoded counts them and castore.As finds no power below it
// that would bypass the count).
type countingStore struct {
	castore.Store
	m *metrics
}

var _ castore.EncodedChunkStore = countingStore{}

// Unwrap returns the store counted, for castore.As.
func (c countingStore) Unwrap() any { return c.Store }

func (c countingStore) PutChunk(ctx context.Context, ch castore.Chunk) (bool, error) {
	added, err := c.Store.PutChunk(ctx, ch)
	if err == nil {
		c.m.countChunk(added)
	}
	return added, err
}

// GetEncodedChunk implements castore.EncodedChunkStore.
func (c countingStore) GetEncodedChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	return castore.GetEncoded(ctx, c.Store, d, dst)
}

// PutEncodedChunk implements castore.EncodedChunkStore: it stores a chunk
// received in its stored form, verifying it.
func (c countingStore) PutEncodedChunk(ctx context.Context, d castore.Digest, stored []byte) (bool, error) {
	added, err := castore.PutEncoded(ctx, c.Store, d, stored)
	if err == nil {
		c.m.countChunk(added)
	}
	return added, err
}

// digestArg converts a digest received in a request.
func digestArg(b []byte, what string) (castore.Digest, error) {
	d, err := castore.DigestFromBytes(b)
	if err != nil {
		return d, fmt.Errorf("%s: %w", what, err)
	}
	return d, nil
}

// statusOf maps an error to a gRPC status error; errors that already are
// one pass unchanged.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, ErrTooMuchWork):
		code = codes.ResourceExhausted
	case errors.Is(err, store.ErrIncomplete):
		code = codes.FailedPrecondition
	case errors.Is(err, errBusy), errors.Is(err, chunkstream.ErrLimit):
		code = codes.ResourceExhausted
	case errors.Is(err, castore.ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, castore.ErrInvalid), errors.Is(err, store.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, castore.ErrNotFound), errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, castore.ErrNoSpace):
		code = codes.ResourceExhausted
	case errors.Is(err, castore.ErrUnavailable):
		code = codes.Unavailable
	}
	return status.Error(code, err.Error())
}

func mapErrorsUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, statusOf(err)
}

func mapErrorsStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return statusOf(h(srv, ss))
}
