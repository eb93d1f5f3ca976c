package server

import (
	"context"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// Maintenance keeps a store within its policies in the background, as a
// Server does its own: it writes the access times of reads
// (store.Index.RecordAccess), expires paths as the RetentionPolicy says
// and collects garbage as the GCPolicy says. It is for a store served
// otherwise: the proxy's pull-through cache. A nil Maintenance does
// nothing (a store with none).
type Maintenance struct {
	retainer  *retainer
	collector *collector // nil: no background garbage collection
}

// NewMaintenance returns the maintenance of the store cas with the index
// over it, its metrics registered with reg (nixcas_retention_*,
// nixcas_gc_*) and its events logged to logger (nil: none).
func NewMaintenance(cas *pebblestore.Store, index *store.Index, ret RetentionPolicy, gc GCPolicy, logger *slog.Logger, reg prometheus.Registerer) (*Maintenance, error) {
	var m Maintenance
	var err error
	if m.retainer, err = newRetainer(ret, index, logger, reg); err != nil {
		return nil, err
	}
	if gc.Interval > 0 {
		if m.collector, err = newCollector(gc, cas, index, logger, reg); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// Run runs until ctx ends; the access times noted by then are written
// before it returns.
func (m *Maintenance) Run(ctx context.Context) {
	if m == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { m.retainer.run(ctx) })
	if m.collector != nil {
		wg.Go(func() { m.collector.run(ctx) })
	}
	wg.Wait()
}

// FlushAccess writes the access times noted since the last write.
func (m *Maintenance) FlushAccess(ctx context.Context) {
	if m != nil {
		m.retainer.flush(ctx)
	}
}
