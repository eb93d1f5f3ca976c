package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// CompactPolicy runs castore compaction in the background while the store
// is idle (see `nixcas store compact`).
type CompactPolicy struct {
	// Idle is how long no new chunk may have been stored before a
	// compaction starts; 0 turns background compaction off.
	Idle time.Duration
	// OlderThan: hot frames younger than this are left as they are.
	OlderThan time.Duration
	// FanOut: runs of cold frames merged at a time (see
	// pebblestore.CompactOptions.FanOut); 0 means the default.
	FanOut int
	// DutyCycle throttles a compaction to this share of one core's time
	// (see pebblestore.CompactOptions.DutyCycle); 0 means full speed.
	DutyCycle float64
}

// DefaultCompactPolicy: off; when on, hot frames older than an hour,
// runs merged four at a time, compacting half the time.
var DefaultCompactPolicy = CompactPolicy{OlderThan: time.Hour, FanOut: pebblestore.DefaultCompactOptions.FanOut, DutyCycle: 0.5}

// compactor runs background compactions.
type compactor struct {
	policy    CompactPolicy
	cas       *pebblestore.Store
	index     *store.Index
	logger    *slog.Logger
	runs      prometheus.Counter
	seconds   prometheus.Counter
	written   prometheus.Counter
	rewritten prometheus.Counter
}

func newCompactor(p CompactPolicy, cas *pebblestore.Store, index *store.Index, logger *slog.Logger, reg prometheus.Registerer) (*compactor, error) {
	if p.FanOut != 0 && p.FanOut < 2 {
		return nil, fmt.Errorf("%w: compaction fan-out %d below 2", castore.ErrInvalid, p.FanOut)
	}
	c := &compactor{
		policy: p, cas: cas, index: index, logger: logger,
		runs: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_compactions_total",
			Help: "Background compactions completed."}),
		seconds: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_compaction_seconds_total",
			Help: "Time spent in background compactions, pauses included."}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_compaction_written_bytes_total",
			Help: "Bytes of cold frames background compactions wrote."}),
		rewritten: prometheus.NewCounter(prometheus.CounterOpts{Name: "nixcas_compaction_rewritten_bytes_total",
			Help: "Chunk bytes (uncompressed) background compactions rewrote."}),
	}
	if err := registerAll(reg, c.runs, c.seconds, c.written, c.rewritten); err != nil {
		return nil, err
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// run checks, until ctx ends, whether the store has been idle for
// policy.Idle (since the last chunk stored, or since the start) with work
// to do, and compacts when it has: hot frames old enough, runs to merge
// (a smaller fan-out than the store was compacted with), or a compaction
// that was interrupted (crash, kill, shutdown), which is taken up again
// without waiting for new data.
func (c *compactor) run(ctx context.Context) {
	tick := min(c.policy.Idle/2, time.Minute)
	t := time.NewTicker(max(tick, time.Second))
	defer t.Stop()
	started := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := c.cas.LastWrite()
		if last.IsZero() {
			last = started
		}
		if time.Since(last) < c.policy.Idle {
			continue
		}
		due, err := c.cas.CompactDue(ctx, pebblestore.CompactOptions{OlderThan: c.policy.OlderThan, FanOut: c.policy.FanOut})
		if err != nil || !due {
			continue
		}
		c.compact(ctx)
	}
}

func (c *compactor) compact(ctx context.Context) {
	start := time.Now()
	res, err := c.cas.Compact(ctx, pebblestore.CompactOptions{Order: c.index.CompactionOrder,
		Neighbourhood: c.index.CompactionNeighbourhood,
		OlderThan:     c.policy.OlderThan, FanOut: c.policy.FanOut, DutyCycle: c.policy.DutyCycle})
	if err == nil {
		c.runs.Inc()
		c.written.Add(float64(res.StoredOut))
		c.rewritten.Add(float64(res.DecodedBytes))
		level := -1
		if res.Into != nil {
			level = res.Into.Level
		}
		c.logger.Info("compacted", "chunks", res.Chunks, "framesIn", res.FramesIn, "storedIn", res.StoredIn,
			"runsMerged", len(res.Merged), "level", level, "rewrittenFrom", res.RewrittenFrom,
			"framesOut", res.FramesOut, "storedOut", res.StoredOut, "seconds", time.Since(start).Seconds())
	}
	c.seconds.Add(time.Since(start).Seconds())
	if err != nil && ctx.Err() == nil {
		c.logger.Warn("background compaction failed", "err", err)
	}
}
