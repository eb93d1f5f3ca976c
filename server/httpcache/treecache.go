package httpcache

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
)

// treeCacheCollector reports the counters of the tree cache NARs are
// rendered through (Options.TreeCacheSize).
type treeCacheCollector struct {
	c                            *castore.TreeCache
	hits, misses, bytes, entries *prometheus.Desc
}

func (t treeCacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.hits
	ch <- t.misses
	ch <- t.bytes
	ch <- t.entries
}

func (t treeCacheCollector) Collect(ch chan<- prometheus.Metric) {
	st := t.c.Stats()
	ch <- prometheus.MustNewConstMetric(t.hits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(t.misses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(t.bytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(t.entries, prometheus.GaugeValue, float64(st.Entries))
}

// registerTreeCache registers c's counters with reg (nothing when reg is
// nil; a collector already registered there is kept).
func (m *metrics) registerTreeCache(reg prometheus.Registerer, c *castore.TreeCache) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(treeCacheCollector{
		c: c,
		hits: prometheus.NewDesc("nixcas_http_tree_cache_hits_total",
			"Directories and blob indexes that NAR responses found in the tree cache (serve --tree-cache).", nil, nil),
		misses: prometheus.NewDesc("nixcas_http_tree_cache_misses_total",
			"Directories and blob indexes that NAR responses read from the store (not in the tree cache).", nil, nil),
		bytes: prometheus.NewDesc("nixcas_http_tree_cache_bytes",
			"Bytes held by the tree cache (about the decoded size of what it holds).", nil, nil),
		entries: prometheus.NewDesc("nixcas_http_tree_cache_entries",
			"Directories and blob indexes held by the tree cache.", nil, nil),
	})
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return nil
	}
	return err
}
