package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/castore/wrap"
	"github.com/nixcas/nixcas/server/auth"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// Options configure a Server. DataDir and GRPCAddr are required.
type Options struct {
	// DataDir is the Pebble store's data directory.
	DataDir string
	// Pebble tunes the store.
	Pebble pebblestore.Options
	// Meta, when set, is the URL of a PostgreSQL database
	// (postgres://...) that keeps the store's records instead of the
	// Pebble database in DataDir, which then holds the frames only;
	// several servers may share the database and DataDir
	// (pebblestore.OpenPostgres).
	Meta string
	// GRPCAddr is the gRPC listen address, e.g. "127.0.0.1:9000" (port 0
	// picks a free port; see Server.GRPCAddr).
	GRPCAddr string
	// HTTPAddr is the HTTP listen address; "" serves no HTTP.
	HTTPAddr string
	// PushToken, when set, is the bearer token writes need (gRPC and
	// HTTP).
	PushToken string
	// ReadToken, when set, is the bearer token reads need.
	ReadToken string
	// SignKeys sign every path as it is stored (HTTP upload, gRPC
	// PathInfoService.Put); paths stored before a key was configured get
	// its signature when read. Every front end serves them.
	SignKeys []signature.SecretKey
	// Compression of NARs served over HTTP: "none" or "zstd".
	Compression string
	// Priority is the binary cache's priority in nix-cache-info.
	Priority int
	// ShutdownTimeout bounds how long calls in progress may take to finish
	// once shutdown begins (default 30 s).
	ShutdownTimeout time.Duration
	// AllowAnonymousWrites lets anyone write without a push token when a
	// listener is on a non-loopback address (otherwise such writes are
	// refused). It cannot be combined with a read token and no push token.
	AllowAnonymousWrites bool
	// TLS, when set, serves both listeners over TLS with it.
	TLS *tls.Config
	// Logger receives the access log (one line per HTTP request and gRPC
	// call, at level Info); nil logs nothing.
	Logger *slog.Logger
	// Limits bound slow, idle and greedy clients (zero fields take
	// DefaultLimits).
	Limits Limits
	// Compact runs compaction in the background when the store is idle.
	Compact CompactPolicy
	// Retention deletes paths not accessed lately (retention.go).
	Retention RetentionPolicy
	// GC runs garbage collection in the background on a schedule.
	GC GCPolicy
	// NarInfoCacheSize bounds the memory, in bytes, of the narinfos kept
	// as served over HTTP, so that serving one again reads nothing from
	// the store (0: DefaultNarInfoCacheSize; negative: none kept). A path
	// put or deleted through this server is forgotten at once; with Meta
	// set, where other servers change the same database unseen, a kept
	// narinfo is served for at most SharedNarInfoTTL.
	NarInfoCacheSize int64
	// TreeCacheSize bounds the memory, in bytes, of the directories and
	// blob indexes kept for NAR responses over HTTP, so that a NAR served
	// again reads them from memory (0: DefaultTreeCacheSize; negative:
	// none kept).
	TreeCacheSize int64
}

// DefaultTreeCacheSize is Options.TreeCacheSize's default: the trees of
// about 50 NARs of a Go toolchain's size (10,000 files).
const DefaultTreeCacheSize = 64 << 20

// DefaultNarInfoCacheSize is Options.NarInfoCacheSize's default: the
// last 24,000 to 48,000 narinfos served, at about 680 bytes each (600 of
// text) and two generations that take turns (see httpcache).
const DefaultNarInfoCacheSize = 32 << 20

// SharedNarInfoTTL bounds how long a server on a shared PostgreSQL
// database (Options.Meta) serves a narinfo it kept without reading the
// database again: the most a path changed or deleted through another
// server may be served as it was.
const SharedNarInfoTTL = time.Second

// Server is a running nixcas server. Make one with New, then call Serve.
type Server struct {
	opts        Options
	store       *pebblestore.Store
	grpc        *grpc.Server
	http        *http.Server
	grpcLn      net.Listener
	httpLn      net.Listener
	auth        auth.Policy
	compactor   *compactor   // nil: no background compaction
	maintenance *Maintenance // access times, retention, garbage collection
}

// New opens the store and the listeners and sets up the services. The
// caller must call Serve, which releases them all.
func New(o Options) (srv *Server, err error) {
	if o.DataDir == "" || o.GRPCAddr == "" {
		return nil, errors.New("server: DataDir and GRPCAddr are required")
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	o.Limits = o.Limits.withDefaults()
	if err := o.Limits.validate(); err != nil {
		return nil, err
	}
	signer, err := store.NewSigner(o.SignKeys...)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{opts: o}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	if o.AllowAnonymousWrites && o.ReadToken != "" && o.PushToken == "" {
		return nil, errors.New("server: anonymous writes with a read token and no push token: set a push token instead")
	}
	if s.grpcLn, err = net.Listen("tcp", o.GRPCAddr); err != nil {
		return nil, fmt.Errorf("server: gRPC listener: %w", err)
	}
	if o.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", o.HTTPAddr); err != nil {
			return nil, fmt.Errorf("server: HTTP listener: %w", err)
		}
	}
	s.auth = authPolicy(o, s.grpcLn, s.httpLn)
	// What clients write or deduplicate against is recorded for the
	// garbage collector's grace period (`nixcas gc` included).
	o.Pebble.RecordUses = true
	if o.Meta != "" {
		s.store, err = pebblestore.OpenPostgres(context.Background(), o.Meta, o.DataDir, o.Pebble)
	} else {
		s.store, err = pebblestore.Open(o.DataDir, o.Pebble)
	}
	if err != nil {
		return nil, err
	}
	index := store.NewIndex(s.store, s.store, store.WithSigner(signer))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := registerAll(reg, storeCollector{s.store, index}, decodedCollector{s.store}); err != nil {
		return nil, err
	}
	if err := registerObjectStore(reg, o.Pebble.Objects); err != nil {
		return nil, err
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nixcas_render_chunk_buffer_bytes",
		Help: "Bytes of chunk buffers held by renders and blob reads in progress: chunks fetched ahead or being sent (a stalled render holds only the chunk it is writing).",
	}, func() float64 { return float64(castore.FetchedBytes()) })); err != nil {
		return nil, err
	}
	cm, err := newConnMetrics(reg)
	if err != nil {
		return nil, err
	}
	// The services read and write through a counting wrapper: calls,
	// chunk bytes and chunks added by operation, on /metrics.
	castoreMetrics, err := wrap.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	cas := wrap.Counting(s.store, castoreMetrics, "local")
	if o.Compact.Idle > 0 {
		if s.compactor, err = newCompactor(o.Compact, s.store, index, o.Logger, reg); err != nil {
			return nil, err
		}
	}

	if s.maintenance, err = NewMaintenance(s.store, index, o.Retention, o.GC, o.Logger, reg); err != nil {
		return nil, err
	}

	grpcOpts := append(o.Limits.grpcOptions(), grpc.WaitForHandlers(true))
	if o.Logger != nil {
		grpcOpts = append(grpcOpts, grpc.StatsHandler(grpcAccessLog{o.Logger}))
	}
	if o.TLS != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	s.grpc, err = grpcapi.NewServer(grpcapi.Options{
		CAS:                       cas,
		Index:                     index,
		PushToken:                 o.PushToken,
		ReadToken:                 o.ReadToken,
		RefuseAnonymousWrites:     s.auth.RefuseAnonymousWrites,
		Registerer:                reg,
		MaxVerifyBytes:            o.Limits.MaxVerifyBytes,
		Tree:                      o.Limits.Tree,
		MaxPutDirectoryBytes:      o.Limits.PutDirectoryBytes,
		MaxPutDirectoryBytesTotal: o.Limits.PutDirectoryBytesTotal,
		MaxChunkStreams:           o.Limits.MaxChunkStreams,
		RenderTimeout:             o.Limits.GRPCRenderTimeout,
	}, grpcOpts...)
	if err != nil {
		return nil, err
	}
	s.grpcLn = o.Limits.limitGRPC(s.grpcLn, cm)
	if o.HTTPAddr == "" {
		return s, nil
	}
	cache, err := newBinaryCache(o, s.auth, cas, index, reg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.handleHealth(mux)
	mux.Handle("/", cache)
	s.http = &http.Server{Handler: httpAccessLog(o.Logger, mux), ReadHeaderTimeout: 30 * time.Second, TLSConfig: o.TLS}
	s.httpLn = o.Limits.applyHTTP(s.http, s.httpLn, cm)
	return s, nil
}

// closeAll releases what New opened, after a failure.
func (s *Server) closeAll() {
	for _, ln := range []net.Listener{s.grpcLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.store != nil {
		s.store.Close()
	}
}

// Auth returns the token policy both listeners apply.
func (s *Server) Auth() auth.Policy { return s.auth }

// TLS reports whether the listeners serve TLS.
func (s *Server) TLS() bool { return s.opts.TLS != nil }

// GRPCAddr returns the address the gRPC listener is bound to.
func (s *Server) GRPCAddr() net.Addr { return s.grpcLn.Addr() }

// HTTPAddr returns the address the HTTP listener is bound to, or nil.
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// Serve serves until ctx ends or a listener fails, then shuts down: it
// stops accepting, lets calls in progress finish for up to
// Options.ShutdownTimeout, cancels the rest, waits for their handlers to
// return and closes the store. It returns nil after a shutdown asked for
// by ctx. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.grpc.Serve(s.grpcLn) }()
	if s.http != nil {
		go func() {
			if s.opts.TLS != nil {
				errc <- s.http.ServeTLS(s.httpLn, "", "")
				return
			}
			errc <- s.http.Serve(s.httpLn)
		}()
	}
	compactDone := make(chan struct{})
	compactCtx, stopCompacting := context.WithCancel(ctx)
	go func() {
		defer close(compactDone)
		if s.compactor != nil {
			s.compactor.run(compactCtx)
		}
	}()
	maintenanceDone := make(chan struct{})
	go func() {
		defer close(maintenanceDone)
		s.maintenance.Run(compactCtx)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("server: %w", err)
	}
	stopCompacting()
	<-compactDone
	<-maintenanceDone
	s.shutdown()
	// After the last request: its reads' access times are written too.
	s.maintenance.FlushAccess(context.Background())
	if cerr := s.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// shutdown stops both servers, gracefully within the timeout.
func (s *Server) shutdown() {
	timeout := time.NewTimer(s.opts.ShutdownTimeout)
	defer timeout.Stop()
	grpcDone := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(grpcDone)
	}()
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if s.http == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
		defer cancel()
		if s.http.Shutdown(ctx) != nil {
			s.http.Close()
		}
	}()
	select {
	case <-grpcDone:
	case <-timeout.C:
		s.grpc.Stop() // cancels the calls left, waits for their handlers
		<-grpcDone
	}
	<-httpDone
}

// registerAll registers every collector with reg, stopping at the first
// error.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
