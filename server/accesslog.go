package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// The access log: one record per HTTP request and per gRPC call, at level
// Info, with message "http" or "grpc" and the attributes
//
//	method    HTTP method, or the gRPC full method name
//	path      HTTP request path (HTTP only)
//	status    HTTP status (HTTP only)
//	code      gRPC status code (gRPC only)
//	received  request body bytes read (HTTP) or message bytes received on the wire (gRPC)
//	sent      response body bytes written (HTTP) or message bytes sent on the wire (gRPC)
//	duration  time from the request's start to its end
//	remote    the client's address
//
// Refused requests (401, 403, UNAUTHENTICATED, PERMISSION_DENIED) are
// logged like any other.

// httpAccessLog logs every request next serves to log; a nil log returns
// next unchanged.
func httpAccessLog(log *slog.Logger, next http.Handler) http.Handler {
	if log == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lw := &loggingWriter{ResponseWriter: w}
		var body *countingBody
		if r.Body != nil && r.Body != http.NoBody {
			body = &countingBody{ReadCloser: r.Body}
			r.Body = body
		}
		defer func() {
			status := lw.status
			if status == 0 {
				status = http.StatusOK
			}
			var received int64
			if body != nil {
				received = body.n.Load()
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "http",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Int64("received", received),
				slog.Int64("sent", lw.sent),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
			)
		}()
		next.ServeHTTP(lw, r)
	})
}

// loggingWriter records the status and the body bytes written.
type loggingWriter struct {
	http.ResponseWriter
	status int
	sent   int64
}

func (l *loggingWriter) WriteHeader(code int) {
	if l.status == 0 && code >= 200 {
		l.status = code
	}
	l.ResponseWriter.WriteHeader(code)
}

func (l *loggingWriter) Write(p []byte) (int, error) {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	n, err := l.ResponseWriter.Write(p)
	l.sent += int64(n)
	return n, err
}

// ReadFrom passes a body read from src (a file section, which the
// connection may send with sendfile) to the wrapped writer, counted as
// Write counts.
func (l *loggingWriter) ReadFrom(src io.Reader) (int64, error) {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	n, err := io.Copy(l.ResponseWriter, src)
	l.sent += n
	return n, err
}

// Flush passes flushes through (http.ResponseController finds it via
// Unwrap too).
func (l *loggingWriter) Flush() {
	if f, ok := l.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (l *loggingWriter) Unwrap() http.ResponseWriter { return l.ResponseWriter }

// countingBody counts the request body bytes read; the handler and the
// server may read it from different goroutines.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// grpcAccessLog is a gRPC stats handler that logs every call when it ends.
type grpcAccessLog struct {
	log *slog.Logger
}

// grpcCall is what grpcAccessLog gathers about one call.
type grpcCall struct {
	method         string
	remote         string
	received, sent atomic.Int64
}

type grpcCallKey struct{}

// TagRPC implements stats.Handler.
func (g grpcAccessLog) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	c := &grpcCall{method: info.FullMethodName}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.remote = p.Addr.String()
	}
	return context.WithValue(ctx, grpcCallKey{}, c)
}

// HandleRPC implements stats.Handler.
func (g grpcAccessLog) HandleRPC(ctx context.Context, s stats.RPCStats) {
	c, ok := ctx.Value(grpcCallKey{}).(*grpcCall)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.InPayload:
		c.received.Add(int64(s.WireLength))
	case *stats.OutPayload:
		c.sent.Add(int64(s.WireLength))
	case *stats.End:
		if c.remote == "" {
			if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
				c.remote = p.Addr.String()
			}
		}
		g.log.LogAttrs(ctx, slog.LevelInfo, "grpc",
			slog.String("method", c.method),
			slog.String("code", status.Code(s.Error).String()),
			slog.Int64("received", c.received.Load()),
			slog.Int64("sent", c.sent.Load()),
			slog.Duration("duration", s.EndTime.Sub(s.BeginTime)),
			slog.String("remote", c.remote),
		)
	}
}

// TagConn implements stats.Handler.
func (g grpcAccessLog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// HandleConn implements stats.Handler.
func (g grpcAccessLog) HandleConn(context.Context, stats.ConnStats) {}
