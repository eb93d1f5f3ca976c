package grpcapi

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// metrics are the server's Prometheus metrics. It is also the gRPC stats
// handler that counts bytes on the wire.
type metrics struct {
	latency      *prometheus.HistogramVec
	received     *prometheus.CounterVec
	sent         *prometheus.CounterVec
	chunksStored prometheus.Counter
	chunksDedup  prometheus.Counter
	verified     prometheus.Counter
	// known holds the registered full method names; other names (a
	// client may send any) are counted as "unknown", which bounds the
	// label values. Written only before the server starts.
	known map[string]bool
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nixcas_grpc_request_duration_seconds",
			Help:    "Time from the start of a gRPC call to its end, by method and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 11), // 100 µs to 105 s
		}, []string{"method", "code"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_grpc_received_bytes_total",
			Help: "Message bytes received on gRPC calls (wire length, framing included), by method.",
		}, []string{"method"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_grpc_sent_bytes_total",
			Help: "Message bytes sent on gRPC calls (wire length, framing included), by method.",
		}, []string{"method"}),
		chunksStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_chunks_stored_total",
			Help: ChunksStoredHelp,
		}),
		chunksDedup: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_chunks_deduplicated_total",
			Help: ChunksDeduplicatedHelp,
		}),
		verified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_verify_bytes_total",
			Help: "Bytes read back from the store and hashed to check what a gRPC request claims (PutBlobs blob digests, PathInfo NAR hashes, CalculateNAR).",
		}),
		known: map[string]bool{},
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.received, m.sent, m.verified} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
		// The chunk counters are shared with the HTTP uploads.
		var err error
		if m.chunksStored, err = registerShared(reg, m.chunksStored); err != nil {
			return nil, err
		}
		if m.chunksDedup, err = registerShared(reg, m.chunksDedup); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Help texts of the chunk counters, which the HTTP binary cache registers
// too (a collector is shared only when its name and help are the same).
const (
	ChunksStoredHelp       = "Chunks received (gRPC uploads, blobs cut on the server, HTTP NAR uploads) that were new and stored."
	ChunksDeduplicatedHelp = "Chunks received (gRPC uploads, blobs cut on the server, HTTP NAR uploads) that were already stored."
)

// registerShared registers c, or returns the collector of the same
// description already registered.
func registerShared(reg prometheus.Registerer, c prometheus.Counter) (prometheus.Counter, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(prometheus.Counter); ok {
			return old, nil
		}
	}
	return c, err
}

func (m *metrics) countChunk(added bool) {
	if added {
		m.chunksStored.Inc()
	} else {
		m.chunksDedup.Inc()
	}
}

func (m *metrics) method(fullMethod string) string {
	if m.known[fullMethod] {
		return fullMethod
	}
	return "unknown"
}

func (m *metrics) observe(fullMethod string, start time.Time, err error) {
	m.latency.WithLabelValues(m.method(fullMethod), status.Code(err).String()).Observe(time.Since(start).Seconds())
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

type methodKey struct{}

// TagRPC implements stats.Handler.
func (m *metrics) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, m.method(info.FullMethodName))
}

// HandleRPC implements stats.Handler.
func (m *metrics) HandleRPC(ctx context.Context, s stats.RPCStats) {
	method, _ := ctx.Value(methodKey{}).(string)
	switch p := s.(type) {
	case *stats.InPayload:
		m.received.WithLabelValues(method).Add(float64(p.WireLength))
	case *stats.OutPayload:
		m.sent.WithLabelValues(method).Add(float64(p.WireLength))
	}
}

// TagConn implements stats.Handler.
func (m *metrics) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (m *metrics) HandleConn(context.Context, stats.ConnStats) {}
