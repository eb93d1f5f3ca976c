package httpcache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/server/grpcapi"
)

// metrics are the handler's Prometheus collectors.
type metrics struct {
	requests *prometheus.CounterVec   // kind, code
	seconds  *prometheus.HistogramVec // kind
	narOut   prometheus.Counter
	inFlight *prometheus.GaugeVec // kind: render, upload
	fileIn   prometheus.Counter
	// chunksStored and chunksDedup are shared with the gRPC services.
	chunksStored, chunksDedup prometheus.Counter
	// series holds the resolved requestSeries, by seriesKey.
	series sync.Map
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nixcas_http_requests_total",
			Help: "Binary cache HTTP requests, by kind (cache-info, narinfo, nar, listing, log, debuginfo, realisation, other; PUTs of narinfos, NARs, logs, debug info and realisations add -upload, DELETEs of narinfos -delete) and status code.",
		}, []string{"kind", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nixcas_http_request_duration_seconds",
			Help:    "Time to answer binary cache HTTP requests, by kind, until the last byte was handed to the connection.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 12), // 50 us to 3.5 min
		}, []string{"kind"}),
		narOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_http_nar_bytes_served_total",
			Help: "Uncompressed NAR bytes rendered for binary cache responses.",
		}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nixcas_http_in_progress",
			Help: "Binary cache requests in progress, by kind: render (NAR downloads, until the handler returns, which is when the render has stopped) and upload (NAR, narinfo and side-file PUTs).",
		}, []string{"kind"}),
		fileIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_http_nar_file_bytes_received_total",
			Help: "Bytes of NAR files (as uploaded, possibly compressed) received by PUT.",
		}),
		chunksStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_chunks_stored_total",
			Help: grpcapi.ChunksStoredHelp,
		}),
		chunksDedup: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_chunks_deduplicated_total",
			Help: grpcapi.ChunksDeduplicatedHelp,
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.seconds, err = register(reg, m.seconds); err != nil {
		return nil, err
	}
	if m.narOut, err = register(reg, m.narOut); err != nil {
		return nil, err
	}
	if m.inFlight, err = register(reg, m.inFlight); err != nil {
		return nil, err
	}
	if m.fileIn, err = register(reg, m.fileIn); err != nil {
		return nil, err
	}
	if m.chunksStored, err = register(reg, m.chunksStored); err != nil {
		return nil, err
	}
	if m.chunksDedup, err = register(reg, m.chunksDedup); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old, nil
		}
	}
	return c, err
}

// countingStore counts the chunks an upload puts in the metrics.
type countingStore struct {
	castore.Store
	m *metrics
}

// Unwrap returns the store counted, for castore.As.
func (c countingStore) Unwrap() any { return c.Store }

func (c countingStore) PutChunk(ctx context.Context, ch castore.Chunk) (bool, error) {
	added, err := c.Store.PutChunk(ctx, ch)
	if err == nil {
		if added {
			c.m.chunksStored.Inc()
		} else {
			c.m.chunksDedup.Inc()
		}
	}
	return added, err
}

func (m *metrics) narBytes(n uint64) { m.narOut.Add(float64(n)) }
func (m *metrics) received(n uint64) { m.fileIn.Add(float64(n)) }

// instrument counts and times every request next answers.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		kind := kindOf(r)
		defer func() { // also when the handler aborts (nar.go)
			code := sw.status
			if code == 0 {
				code = http.StatusOK
			}
			s := m.seriesOf(kind, code)
			s.requests.Inc()
			s.seconds.Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// requestSeries are the metrics of the requests of one kind and status.
type requestSeries struct {
	requests prometheus.Counter
	seconds  prometheus.Observer
}

type seriesKey struct {
	kind string
	code int
}

// seriesOf returns the metrics of requests of that kind and status,
// resolving the labels once per pair (a series appears on /metrics once
// a request of its kind and status was answered, as before).
func (m *metrics) seriesOf(kind string, code int) requestSeries {
	k := seriesKey{kind, code}
	if s, ok := m.series.Load(k); ok {
		return s.(requestSeries)
	}
	s := requestSeries{
		requests: m.requests.WithLabelValues(kind, strconv.Itoa(code)),
		seconds:  m.seconds.WithLabelValues(kind),
	}
	m.series.Store(k, s)
	return s
}

// kindOf classifies a request for the metrics' labels.
func kindOf(r *http.Request) string {
	p := r.URL.Path
	kind := "other"
	switch {
	case p == "/nix-cache-info":
		return "cache-info"
	case strings.HasPrefix(p, "/nar/"):
		kind = "nar"
	case strings.HasSuffix(p, ".narinfo"):
		kind = "narinfo"
	case strings.HasSuffix(p, ".ls"):
		return "listing"
	case strings.HasPrefix(p, "/log/"):
		kind = "log"
	case strings.HasPrefix(p, "/debuginfo/"):
		kind = "debuginfo"
	case strings.HasPrefix(p, "/realisations/"):
		kind = "realisation"
	}
	if r.Method == http.MethodPut && kind != "other" {
		kind += "-upload"
	}
	if r.Method == http.MethodDelete && kind != "other" {
		kind += "-delete"
	}
	return kind
}

// statusWriter records the status code sent.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

// ReadFrom passes a body read from src (a file section, which the
// connection may send with sendfile) to the wrapped writer.
func (s *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return io.Copy(s.ResponseWriter, src)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// narInfoCacheCollector reports a narinfo cache's counters.
type narInfoCacheCollector struct {
	c                   *narInfoCache
	hits, misses, bytes *prometheus.Desc
}

func (n narInfoCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- n.hits
	ch <- n.misses
	ch <- n.bytes
}

func (n narInfoCacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := n.c.entries.Stats()
	ch <- prometheus.MustNewConstMetric(n.hits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(n.misses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(n.bytes, prometheus.GaugeValue, float64(st.Bytes))
}

// registerNarInfoCache registers c's metrics with reg (nil: none). When a
// narinfo cache is registered there already, that one is reported.
func (m *metrics) registerNarInfoCache(reg prometheus.Registerer, c *narInfoCache) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(narInfoCacheCollector{
		c: c,
		hits: prometheus.NewDesc("nixcas_http_narinfo_cache_hits_total",
			"narinfo requests answered from the narinfo cache (serve --narinfo-cache).", nil, nil),
		misses: prometheus.NewDesc("nixcas_http_narinfo_cache_misses_total",
			"narinfo requests the narinfo cache did not hold (the index was read).", nil, nil),
		bytes: prometheus.NewDesc("nixcas_http_narinfo_cache_bytes",
			"Bytes held by the narinfo cache (texts plus a fixed overhead per entry).", nil, nil),
	})
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}
