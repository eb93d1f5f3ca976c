package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/store"
)

// RetentionPolicy deletes, on a schedule, the store paths that no one
// uploaded or downloaded lately (see store.Retention); pinned paths stay.
// Deleted paths' data is freed by a garbage collection.
type RetentionPolicy struct {
	// MaxAge deletes paths not accessed for longer; 0: no age limit.
	MaxAge time.Duration
	// MaxSize deletes least recently accessed paths until the NAR sizes
	// of those left add up to at most this; 0: no size limit.
	MaxSize uint64
	// Interval is the time between two runs (default
	// DefaultRetentionInterval); the first runs one Interval after start.
	Interval time.Duration
}

// DefaultRetentionInterval is RetentionPolicy.Interval's default.
const DefaultRetentionInterval = time.Hour

// accessFlushInterval is how often the access times of reads are
// written (store.Index.FlushAccess).
const accessFlushInterval = 30 * time.Second

// on reports whether the policy deletes anything.
func (p RetentionPolicy) on() bool { return p.MaxAge > 0 || p.MaxSize > 0 }

// retainer writes access times and runs retention.
type retainer struct {
	policy  RetentionPolicy
	index   *store.Index
	logger  *slog.Logger
	runs    prometheus.Counter
	failed  prometheus.Counter
	deleted prometheus.Counter
	bytes   prometheus.Counter
	last    prometheus.Gauge
}

func newRetainer(p RetentionPolicy, index *store.Index, logger *slog.Logger, reg prometheus.Registerer) (*retainer, error) {
	if p.Interval <= 0 {
		p.Interval = DefaultRetentionInterval
	}
	r := &retainer{
		policy: p, index: index, logger: logger,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_retention_runs_total",
			Help: "Retention runs completed (serve --retention, --max-size)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_retention_failures_total",
			Help: "Retention runs that failed."}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_retention_deleted_paths_total",
			Help: "Store paths retention deleted (not accessed within --retention, or least recently accessed beyond --max-size)."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_retention_deleted_nar_bytes_total",
			Help: "NAR bytes of the store paths retention deleted (their data is freed by a garbage collection)."}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nixcas_retention_last_run_timestamp_seconds",
			Help: "When the last retention run completed, in Unix seconds (0: none yet)."}),
	}
	if err := registerAll(reg, r.runs, r.failed, r.deleted, r.bytes, r.last); err != nil {
		return nil, err
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// run writes access times every accessFlushInterval and, with a policy
// on, expires paths every policy.Interval, until ctx ends; it flushes
// access times once more before it returns.
func (r *retainer) run(ctx context.Context) {
	flush := time.NewTicker(accessFlushInterval)
	defer flush.Stop()
	var expire <-chan time.Time
	if r.policy.on() {
		t := time.NewTicker(r.policy.Interval)
		defer t.Stop()
		expire = t.C
	}
	for {
		select {
		case <-ctx.Done():
			r.flush(context.WithoutCancel(ctx))
			return
		case <-flush.C:
			r.flush(ctx)
		case <-expire:
			r.expire(ctx)
		}
	}
}

func (r *retainer) flush(ctx context.Context) {
	if err := r.index.FlushAccess(ctx); err != nil && ctx.Err() == nil {
		r.logger.Warn("writing access times failed", "err", err)
	}
}

func (r *retainer) expire(ctx context.Context) {
	start := time.Now()
	res, err := r.index.Expire(ctx, store.Retention{MaxAge: r.policy.MaxAge, MaxSize: r.policy.MaxSize})
	r.deleted.Add(float64(len(res.Deleted)))
	r.bytes.Add(float64(res.DeletedNARBytes))
	if err != nil {
		if ctx.Err() == nil {
			r.failed.Inc()
			r.logger.Warn("retention failed", "err", err, "deleted", len(res.Deleted))
		}
		return
	}
	r.runs.Inc()
	r.last.SetToCurrentTime()
	r.logger.Info("retention", "deleted", len(res.Deleted), "deletedNarBytes", res.DeletedNARBytes,
		"paths", res.Paths, "narBytes", res.NARBytes, "pinned", res.Pinned, "firstSeen", res.FirstSeen,
		"fits", res.Fits, "seconds", time.Since(start).Seconds())
	if !res.Fits {
		r.logger.Warn("retention: pinned paths alone exceed the maximum size", "narBytes", res.NARBytes, "maxSize", r.policy.MaxSize)
	}
}
