package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/grpcapi"
	"github.com/nixcas/nixcas/store"
)

// Options configure a Server. DataDir and GRPCAddr are required.
type Options struct {
	// DataDir is the Pebble store's data directory.
	DataDir string
	// Pebble tunes the store.
	Pebble castore.PebbleOptions
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
	// SignKeys sign the narinfos served over HTTP.
	SignKeys []signature.SecretKey
	// Compression of NARs served over HTTP: "none" or "zstd".
	Compression string
	// Priority is the binary cache's priority in nix-cache-info.
	Priority int
	// ShutdownTimeout bounds how long calls in progress may take to finish
	// once shutdown begins (default 30 s).
	ShutdownTimeout time.Duration
	// Limits bound slow, idle and greedy clients (zero fields take
	// DefaultLimits).
	Limits Limits
}

// Server is a running nixcas server. Make one with New, then call Serve.
type Server struct {
	opts   Options
	store  *castore.PebbleStore
	grpc   *grpc.Server
	http   *http.Server
	grpcLn net.Listener
	httpLn net.Listener
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
	s := &Server{opts: o}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()
	if s.store, err = castore.OpenPebble(o.DataDir, o.Pebble); err != nil {
		return nil, err
	}
	index := store.NewIndex(s.store, s.store)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cm, err := newConnMetrics(reg)
	if err != nil {
		return nil, err
	}

	s.grpc, err = grpcapi.NewServer(grpcapi.Options{
		CAS:            s.store,
		Index:          index,
		PushToken:      o.PushToken,
		ReadToken:      o.ReadToken,
		Registerer:     reg,
		MaxVerifyBytes: o.Limits.MaxVerifyBytes,
	}, append(o.Limits.grpcOptions(), grpc.WaitForHandlers(true))...)
	if err != nil {
		return nil, err
	}
	if s.grpcLn, err = net.Listen("tcp", o.GRPCAddr); err != nil {
		return nil, fmt.Errorf("server: gRPC listener: %w", err)
	}
	s.grpcLn = o.Limits.limitGRPC(s.grpcLn, cm)
	if o.HTTPAddr == "" {
		return s, nil
	}
	cache, err := newBinaryCache(o, s.store, index, reg)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", cache)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	if s.httpLn, err = net.Listen("tcp", o.HTTPAddr); err != nil {
		return nil, fmt.Errorf("server: HTTP listener: %w", err)
	}
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
		go func() { errc <- s.http.Serve(s.httpLn) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("server: %w", err)
	}
	s.shutdown()
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
