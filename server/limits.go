package server

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// Limits bound what slow, idle or greedy clients can hold of the server.
// Zero fields take the defaults of [DefaultLimits]; a negative duration or
// count turns that limit off.
type Limits struct {
	// HTTPHeaderTimeout bounds the time to read a request's headers.
	HTTPHeaderTimeout time.Duration
	// HTTPIdleTimeout closes keep-alive connections idle that long.
	HTTPIdleTimeout time.Duration
	// HTTPBodyTimeout cuts an upload whose body sends nothing for that
	// long. It bounds progress, not the whole upload.
	HTTPBodyTimeout time.Duration
	// HTTPWriteTimeout cuts a download the client does not read for that
	// long (no 64 KiB piece accepted by the connection in that time).
	HTTPWriteTimeout time.Duration
	// HTTPMaxConns bounds the open HTTP connections. A connection accepted
	// beyond it closes the longest-idle one (keep-alive, or not yet sent
	// a byte), or is itself closed when none is idle.
	HTTPMaxConns int
	// MaxUploads and MaxRenders bound the NAR uploads and NAR renders in
	// progress; beyond them the server answers 503 with Retry-After.
	MaxUploads, MaxRenders int

	// GRPCMaxConns bounds the open gRPC connections; a connection
	// accepted beyond it is closed.
	GRPCMaxConns int
	// GRPCIdleTimeout closes gRPC connections without calls for that long.
	GRPCIdleTimeout time.Duration
	// GRPCHandshakeTimeout bounds the time a new gRPC connection has to
	// complete its HTTP/2 handshake.
	GRPCHandshakeTimeout time.Duration
	// GRPCMaxStreams bounds the concurrent calls on one gRPC connection.
	GRPCMaxStreams int
	// GRPCMaxRecvMsgSize bounds the size of one received gRPC message.
	GRPCMaxRecvMsgSize int
	// GRPCKeepaliveMinTime is the shortest keepalive ping interval a
	// client may use; a client pinging more often is disconnected.
	GRPCKeepaliveMinTime time.Duration
	// GRPCKeepaliveTime is how long a connection may be silent before
	// the server pings it; GRPCKeepaliveTimeout how long it then waits
	// for the answer before closing the connection.
	GRPCKeepaliveTime, GRPCKeepaliveTimeout time.Duration

	// MaxVerifyBytes bounds the chunk bytes one gRPC request may make the
	// server read and hash (PutBlobs) or render (PathInfoService.Put,
	// CalculateNAR).
	MaxVerifyBytes int64

	// Tree bounds the expanded tree of every root accepted or rendered
	// (DirectoryService.Put, PathInfo puts, CalculateNAR, snix-castore
	// NAR URLs, NAR uploads); zero fields take castore's defaults. Its
	// depth limit may not exceed castore.MaxDepth, the deepest NAR the
	// NAR reader takes.
	Tree castore.TreeLimits
	// PutDirectoryBytes bounds the memory one DirectoryService.Put stream
	// may hold (its directories are kept until the stream is validated),
	// PutDirectoryBytesTotal that memory over all such streams at once;
	// a stream that would pass either is refused with RESOURCE_EXHAUSTED.
	PutDirectoryBytes, PutDirectoryBytesTotal int64
	// MaxChunkStreams bounds the chunk-stream calls (PutChunks, ReadChunks)
	// in progress at once, each of which may hold about 100 MiB (default
	// grpcapi.DefaultMaxChunkStreams).
	MaxChunkStreams int
	// RenderTimeout bounds one HTTP NAR response, rendering and sending
	// together (default httpcache.DefaultRenderTimeout), and
	// GRPCRenderTimeout one render of the gRPC services (default
	// grpcapi.DefaultRenderTimeout).
	RenderTimeout, GRPCRenderTimeout time.Duration
}

// DefaultLimits are the limits a zero Limits field takes.
var DefaultLimits = Limits{
	HTTPHeaderTimeout:    30 * time.Second,
	HTTPIdleTimeout:      60 * time.Second,
	HTTPBodyTimeout:      60 * time.Second,
	HTTPWriteTimeout:     60 * time.Second,
	HTTPMaxConns:         4096,
	MaxUploads:           16,
	MaxRenders:           64,
	GRPCMaxConns:         1024,
	GRPCIdleTimeout:      5 * time.Minute,
	GRPCHandshakeTimeout: 20 * time.Second,
	GRPCMaxStreams:       256,
	GRPCMaxRecvMsgSize:   grpcapi.MaxMessageSize,
	GRPCKeepaliveMinTime: 20 * time.Second,
	GRPCKeepaliveTime:    2 * time.Minute,
	GRPCKeepaliveTimeout: 20 * time.Second,
	MaxVerifyBytes:       grpcapi.DefaultMaxVerifyBytes,

	PutDirectoryBytes:      grpcapi.DefaultMaxPutDirectoryBytes,
	PutDirectoryBytesTotal: grpcapi.DefaultMaxPutDirectoryBytesTotal,
	MaxChunkStreams:        grpcapi.DefaultMaxChunkStreams,
}

// withDefaults returns l with its zero fields set from DefaultLimits and
// its negative ones set to 0 (off).
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	dur := func(v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	num := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	dur(&l.HTTPHeaderTimeout, d.HTTPHeaderTimeout)
	dur(&l.HTTPIdleTimeout, d.HTTPIdleTimeout)
	dur(&l.HTTPBodyTimeout, d.HTTPBodyTimeout)
	dur(&l.HTTPWriteTimeout, d.HTTPWriteTimeout)
	num(&l.HTTPMaxConns, d.HTTPMaxConns)
	num(&l.MaxUploads, d.MaxUploads)
	num(&l.MaxRenders, d.MaxRenders)
	num(&l.GRPCMaxConns, d.GRPCMaxConns)
	dur(&l.GRPCIdleTimeout, d.GRPCIdleTimeout)
	dur(&l.GRPCHandshakeTimeout, d.GRPCHandshakeTimeout)
	num(&l.GRPCMaxStreams, d.GRPCMaxStreams)
	num(&l.GRPCMaxRecvMsgSize, d.GRPCMaxRecvMsgSize)
	dur(&l.GRPCKeepaliveMinTime, d.GRPCKeepaliveMinTime)
	dur(&l.GRPCKeepaliveTime, d.GRPCKeepaliveTime)
	dur(&l.GRPCKeepaliveTimeout, d.GRPCKeepaliveTimeout)
	switch {
	case l.MaxVerifyBytes == 0:
		l.MaxVerifyBytes = d.MaxVerifyBytes
	case l.MaxVerifyBytes < 0:
		l.MaxVerifyBytes = 0
	}
	// grpcapi has no "off" for the directory memory: off is no bound.
	bytes := func(v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = math.MaxInt64
		}
	}
	bytes(&l.PutDirectoryBytes, d.PutDirectoryBytes)
	bytes(&l.PutDirectoryBytesTotal, d.PutDirectoryBytesTotal)
	if l.MaxChunkStreams <= 0 {
		l.MaxChunkStreams = d.MaxChunkStreams
	}
	return l
}

// validate checks what withDefaults cannot mend.
func (l Limits) validate() error {
	t := l.Tree.WithDefaults()
	if err := t.Validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if t.MaxDepth > castore.MaxDepth {
		return fmt.Errorf("server: tree depth limit %d: above %d, the deepest NAR the NAR reader takes", t.MaxDepth, castore.MaxDepth)
	}
	return nil
}

// grpcOptions returns the gRPC server options that apply l.
func (l Limits) grpcOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             l.GRPCKeepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
	params := keepalive.ServerParameters{
		MaxConnectionIdle: l.GRPCIdleTimeout,
		Time:              l.GRPCKeepaliveTime,
		Timeout:           l.GRPCKeepaliveTimeout,
	}
	if params.Time == 0 {
		params.Time = time.Duration(1<<63 - 1) // gRPC's "never"
	}
	opts = append(opts, grpc.KeepaliveParams(params))
	if l.GRPCHandshakeTimeout > 0 {
		opts = append(opts, grpc.ConnectionTimeout(l.GRPCHandshakeTimeout))
	}
	if l.GRPCMaxStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(uint32(l.GRPCMaxStreams)))
	}
	if l.GRPCMaxRecvMsgSize > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(l.GRPCMaxRecvMsgSize))
	}
	return opts
}

// applyHTTP sets the timeouts and the connection cap of l on hs, whose
// connections come from ln, and returns the listener to serve.
func (l Limits) applyHTTP(hs *http.Server, ln net.Listener, m *connMetrics) net.Listener {
	hs.ReadHeaderTimeout = l.HTTPHeaderTimeout
	hs.IdleTimeout = l.HTTPIdleTimeout
	hs.Handler = progressTimeouts(hs.Handler, l.HTTPBodyTimeout, l.HTTPWriteTimeout)
	if l.HTTPMaxConns <= 0 {
		return ln
	}
	cl := newConnLimiter(ln, l.HTTPMaxConns, m.forListener("http"))
	hs.ConnState = cl.track
	return cl
}

// limitGRPC returns ln capped at l.GRPCMaxConns connections.
func (l Limits) limitGRPC(ln net.Listener, m *connMetrics) net.Listener {
	if l.GRPCMaxConns <= 0 {
		return ln
	}
	return newConnLimiter(ln, l.GRPCMaxConns, m.forListener("grpc"))
}

// connMetrics count the connections the limiters hold and close.
type connMetrics struct {
	open   *prometheus.GaugeVec   // listener
	closed *prometheus.CounterVec // listener, reason
}

func newConnMetrics(reg prometheus.Registerer) (*connMetrics, error) {
	m := &connMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixcas_connections_open",
			Help: "Open client connections, by listener (http, grpc).",
		}, []string{"listener"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_connections_limited_total",
			Help: "Connections closed by the connection cap, by listener and reason (evicted-idle: an idle one made room; refused: none was idle).",
		}, []string{"listener", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.open, m.closed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("server: registering connection metrics: %w", err)
		}
	}
	return m, nil
}

// listenerMetrics are the connMetrics of one listener.
type listenerMetrics struct {
	open             prometheus.Gauge
	evicted, refused prometheus.Counter
}

func (m *connMetrics) forListener(name string) listenerMetrics {
	return listenerMetrics{
		open:    m.open.WithLabelValues(name),
		evicted: m.closed.WithLabelValues(name, "evicted-idle"),
		refused: m.closed.WithLabelValues(name, "refused"),
	}
}

// connLimiter is a listener that holds at most max connections open. When
// a connection arrives at the cap, the one idle longest is closed to make
// room; when none is idle, the new one is closed. Only an http.Server
// reports idleness (through track); without it no connection is idle.
type connLimiter struct {
	net.Listener
	max int
	m   listenerMetrics

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
	idle  *list.List // of *limitedConn, longest idle first
}

func newConnLimiter(ln net.Listener, max int, m listenerMetrics) *connLimiter {
	return &connLimiter{Listener: ln, max: max, m: m, conns: map[*limitedConn]struct{}{}, idle: list.New()}
}

// limitedConn is a connection counted by a connLimiter.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	idle *list.Element // in l.idle, or nil
	once sync.Once
}

// Accept implements net.Listener.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
	}
}

// admit counts c in, making room if needed, or closes it and returns nil.
func (l *connLimiter) admit(c net.Conn) *limitedConn {
	l.mu.Lock()
	var evict *limitedConn
	if len(l.conns) >= l.max {
		front := l.idle.Front()
		if front == nil {
			l.mu.Unlock()
			l.m.refused.Inc()
			c.Close()
			return nil
		}
		evict = front.Value.(*limitedConn)
		l.forget(evict)
	}
	lc := &limitedConn{Conn: c, l: l}
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	l.m.open.Inc()
	if evict != nil {
		l.m.evicted.Inc()
		evict.Conn.Close()
	}
	return lc
}

// forget stops counting c. l.mu is held.
func (l *connLimiter) forget(c *limitedConn) bool {
	if _, ok := l.conns[c]; !ok {
		return false
	}
	delete(l.conns, c)
	if c.idle != nil {
		l.idle.Remove(c.idle)
		c.idle = nil
	}
	l.m.open.Dec()
	return true
}

// track is an http.Server ConnState hook: it keeps the list of idle
// connections (new ones that have sent nothing yet count as idle).
func (l *connLimiter) track(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, open := l.conns[lc]; !open {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		if lc.idle == nil {
			lc.idle = l.idle.PushBack(lc)
		}
	default:
		if lc.idle != nil {
			l.idle.Remove(lc.idle)
			lc.idle = nil
		}
	}
}

// ReadFrom is the connection's own (sendfile for a file on a TCP
// connection), which embedding net.Conn would hide.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// Close implements net.Conn; it is safe to call twice.
func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.forget(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// progressChunk is the most written to a connection under one write
// deadline: a download is cut when the client takes HTTPWriteTimeout to
// accept this much.
const progressChunk = 64 << 10

// progressTimeouts wraps next so that a request body that sends nothing
// for read, or a response the client does not read for write, ends the
// request with a deadline error (0 turns either off). Deadlines move with
// each piece of progress, so large transfers may take as long as they
// need. When the handler returns, what net/http still does on the
// connection (discarding an unread body, flushing the response) gets one
// more period; net/http sets its own read deadlines for the next request.
func progressTimeouts(next http.Handler, read, write time.Duration) http.Handler {
	if read <= 0 && write <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if read > 0 && r.Body != nil && r.Body != http.NoBody {
			// A shallow copy: net/http must still see its own body in
			// the original request when it finishes the response.
			body := &progressBody{ReadCloser: r.Body, rc: rc, d: read}
			r = r.WithContext(r.Context())
			r.Body = body
			defer func() {
				if !body.done.Load() {
					rc.SetReadDeadline(time.Now().Add(read))
				}
			}()
		}
		if write > 0 {
			w = &progressWriter{ResponseWriter: w, rc: rc, d: write}
			defer rc.SetWriteDeadline(time.Now().Add(write))
		}
		next.ServeHTTP(w, r)
	})
}

// progressBody moves the connection's read deadline before each read of
// a request body, and clears it at the body's end (net/http then reads
// ahead on the connection to notice a client going away, which a
// deadline would cut).
type progressBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	d    time.Duration
	done atomic.Bool // read to its end or failed
}

func (b *progressBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return b.ReadCloser.Read(p)
	}
	if err := b.rc.SetReadDeadline(time.Now().Add(b.d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done.Store(true)
		b.rc.SetReadDeadline(time.Time{})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("server: request body sent nothing for %v: %w", b.d, err)
		}
	}
	return n, err
}

// progressWriter writes a response in pieces of at most progressChunk
// bytes, each under a fresh write deadline.
type progressWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *progressWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), progressChunk)
		if err := w.rc.SetWriteDeadline(time.Now().Add(w.d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return n, err
		}
		m, err := w.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// ReadFrom writes what src has in pieces of at most progressChunk bytes,
// each under a fresh write deadline, as Write does, through the
// response's own ReadFrom: an *io.LimitedReader of a file stays one, so
// that a TCP connection sends it with sendfile.
func (w *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	lr, limited := src.(*io.LimitedReader)
	if !ok || !limited {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	var n int64
	for lr.N > 0 {
		if err := w.rc.SetWriteDeadline(time.Now().Add(w.d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return n, err
		}
		k := min(lr.N, progressChunk)
		piece := &io.LimitedReader{R: lr.R, N: k}
		m, err := rf.ReadFrom(piece)
		n += m
		lr.N -= m
		if err != nil || m < k {
			return n, err
		}
	}
	return n, nil
}

// Flush implements http.Flusher.
func (w *progressWriter) Flush() { w.rc.Flush() }

// Unwrap lets http.ResponseController reach the connection.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
