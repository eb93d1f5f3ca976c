package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// GCPolicy runs garbage collection in the background on a schedule (see
// `nixcas gc`). Uploads and pushes go on while it runs: what they write or
// deduplicate against is kept (castore's use records and collection
// epoch).
type GCPolicy struct {
	// Interval between the end of a collection and the start of the next;
	// 0 turns background collection off.
	Interval time.Duration
	// Grace: what was written or deduplicated against this long before a
	// collection started is kept.
	Grace time.Duration
	// RewriteBelow: frames whose live share is below this are rewritten.
	RewriteBelow float64
}

// DefaultGCPolicy: off; when on, an hour of grace, frames less than half
// live rewritten.
var DefaultGCPolicy = GCPolicy{Grace: pebblestore.DefaultGCOptions.Grace, RewriteBelow: pebblestore.DefaultGCOptions.RewriteBelow}

// collector runs background garbage collections, one at a time.
type collector struct {
	policy GCPolicy
	cas    *pebblestore.Store
	index  *store.Index
	logger *slog.Logger

	runs, failures           prometheus.Counter
	freedStored, freedChunks prometheus.Counter
	deleted                  *prometheus.CounterVec
	framesRewritten          prometheus.Counter
	deadBytes                prometheus.Gauge
	duration                 prometheus.Histogram
}

func newCollector(p GCPolicy, cas *pebblestore.Store, index *store.Index, logger *slog.Logger, reg prometheus.Registerer) (*collector, error) {
	c := &collector{
		policy: p, cas: cas, index: index, logger: logger,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_gc_runs_total",
			Help: "Background garbage collections completed."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_gc_failures_total",
			Help: "Background garbage collections that failed."}),
		freedStored: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_gc_freed_bytes_total",
			Help: "Stored bytes (frames and unpacked chunks) garbage collections freed, net of the frames they rewrote."}),
		freedChunks: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_gc_freed_chunk_bytes_total",
			Help: "Uncompressed bytes of the chunks garbage collections deleted."}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nixcas_gc_deleted_total",
			Help: "Items garbage collections deleted, by kind (chunk, blob, directory, frame)."}, []string{"kind"}),
		framesRewritten: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_gc_frames_rewritten_total",
			Help: "Frames below the live-share threshold that garbage collections rewrote."}),
		deadBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nixcas_gc_dead_bytes",
			Help: "Decoded bytes of dead chunks left in frames above the threshold after the last garbage collection."}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nixcas_gc_duration_seconds",
			Help: "How long background garbage collections took.", Buckets: prometheus.ExponentialBuckets(0.1, 4, 10)}),
	}
	if err := registerAll(reg, c.runs, c.failures, c.freedStored, c.freedChunks, c.deleted, c.framesRewritten, c.deadBytes, c.duration); err != nil {
		return nil, err
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// run collects every policy.Interval until ctx ends.
func (c *collector) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.policy.Interval):
		}
		c.collect(ctx)
	}
}

func (c *collector) collect(ctx context.Context) {
	start := time.Now()
	res, err := c.index.GC(ctx, c.cas, pebblestore.GCOptions{Grace: c.policy.Grace, RewriteBelow: c.policy.RewriteBelow})
	c.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, pebblestore.ErrGCRunning) {
			c.failures.Inc()
			c.logger.Warn("background garbage collection failed", "err", err)
		}
		return
	}
	c.runs.Inc()
	if res.StoredBytesFreed > 0 {
		c.freedStored.Add(float64(res.StoredBytesFreed))
	}
	c.freedChunks.Add(float64(res.ChunkBytesFreed))
	c.deleted.WithLabelValues("chunk").Add(float64(res.ChunksDeleted))
	c.deleted.WithLabelValues("blob").Add(float64(res.BlobsDeleted))
	c.deleted.WithLabelValues("directory").Add(float64(res.DirectoriesDeleted))
	c.deleted.WithLabelValues("frame").Add(float64(res.FramesDeleted + res.FramesRewritten))
	c.framesRewritten.Add(float64(res.FramesRewritten))
	c.deadBytes.Set(float64(res.DeadBytesLeft))
	c.logger.Info("garbage collected", "pathsLive", res.PathsLive, "chunks", res.ChunksDeleted, "blobs", res.BlobsDeleted,
		"directories", res.DirectoriesDeleted, "chunkBytes", res.ChunkBytesFreed, "storedBytes", res.StoredBytesFreed,
		"framesDeleted", res.FramesDeleted, "framesRewritten", res.FramesRewritten, "deadBytesLeft", res.DeadBytesLeft,
		"strayFrames", res.StrayFramesDeleted, "narFileNames", res.NARFilesDeleted, "seconds", res.Seconds)
}
