package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore/pebblestore"
)

// decodedCollector exports the store's cache of decoded frames on disk
// (see pebblestore.DecodedCacheStats): its size and what it served.
type decodedCollector struct{ s *pebblestore.Store }

var (
	decodedBytesDesc = prometheus.NewDesc("nixcas_decoded_cache_bytes",
		"Bytes of decoded frames kept on disk for reads.", nil, nil)
	decodedMaxBytesDesc = prometheus.NewDesc("nixcas_decoded_cache_max_bytes",
		"Limit of the decoded frames kept on disk (--decoded-cache-size; 0: none kept).", nil, nil)
	decodedFilesDesc = prometheus.NewDesc("nixcas_decoded_cache_files",
		"Decoded frames kept on disk.", nil, nil)
	decodedHitsDesc = prometheus.NewDesc("nixcas_decoded_cache_hits_total",
		"Chunk reads served from a decoded frame on disk, without decompressing.", nil, nil)
	decodedMissesDesc = prometheus.NewDesc("nixcas_decoded_cache_misses_total",
		"Frames decompressed for a read for want of their decoded bytes on disk.", nil, nil)
	decodedWritesDesc = prometheus.NewDesc("nixcas_decoded_cache_writes_total",
		"Decoded frames written to disk.", nil, nil)
	decodedSkippedDesc = prometheus.NewDesc("nixcas_decoded_cache_skipped_total",
		"Decoded frames not written to disk: the writer was behind or the disk nearly full.", nil, nil)
	decodedEvictionsDesc = prometheus.NewDesc("nixcas_decoded_cache_evictions_total",
		"Decoded frames removed from disk to stay within the limit.", nil, nil)
	decodedDamagedDesc = prometheus.NewDesc("nixcas_decoded_cache_damaged_total",
		"Decoded frames on disk found damaged (a chunk read from one did not match its digest), dropped and read from the frame instead.", nil, nil)
)

func (c decodedCollector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{decodedBytesDesc, decodedMaxBytesDesc, decodedFilesDesc, decodedHitsDesc, decodedMissesDesc, decodedWritesDesc, decodedSkippedDesc, decodedEvictionsDesc, decodedDamagedDesc}
}

// Describe implements prometheus.Collector.
func (c decodedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c decodedCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.DecodedCacheStats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(decodedBytesDesc, float64(st.Bytes))
	gauge(decodedMaxBytesDesc, float64(st.MaxBytes))
	gauge(decodedFilesDesc, float64(st.Files))
	counter(decodedHitsDesc, st.Hits)
	counter(decodedMissesDesc, st.Misses)
	counter(decodedWritesDesc, st.Writes)
	counter(decodedSkippedDesc, st.Skipped)
	counter(decodedEvictionsDesc, st.Evictions)
	counter(decodedDamagedDesc, st.Damaged)
}
