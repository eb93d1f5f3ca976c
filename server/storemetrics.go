package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/pebblestore"
	"github.com/nixcas/nixcas/store"
)

// storeCollector exports the store's size as gauges. A scrape reads the
// counters the store keeps (one key), the index's path count (kept by
// Put, counted once at the first scrape) and the sizes of the data
// directory's files (one directory listing); it never scans the store.
type storeCollector struct {
	cas   castore.Stater // its disk use too when castore.As finds a castore.DiskUser
	index *store.Index
}

var (
	storeStoredBytesDesc = prometheus.NewDesc("nixcas_store_stored_bytes",
		"Bytes of the compressed frames and of the chunks stored unpacked.", nil, nil)
	storeFramesDesc = prometheus.NewDesc("nixcas_store_frames",
		"Frames the chunks are packed in.", nil, nil)
	storeUniqueBytesDesc = prometheus.NewDesc("nixcas_store_unique_chunk_bytes",
		"Uncompressed bytes of the distinct chunks stored.", nil, nil)
	storeLogicalBytesDesc = prometheus.NewDesc("nixcas_store_logical_bytes",
		"Sum of the sizes of all files ingested, repeats counted.", nil, nil)
	storeChunksDesc = prometheus.NewDesc("nixcas_store_chunks",
		"Distinct chunks stored.", nil, nil)
	storePathsDesc = prometheus.NewDesc("nixcas_store_paths",
		"Store paths (PathInfos) recorded.", nil, nil)
	storeBlobsDesc = prometheus.NewDesc("nixcas_store_blobs",
		"Blob indexes stored (files of more than one chunk).", nil, nil)
	storeDirectoriesDesc = prometheus.NewDesc("nixcas_store_directories",
		"Directories stored.", nil, nil)
	storeDiskBytesDesc = prometheus.NewDesc("nixcas_store_disk_bytes",
		"Space allocated to the data directory, as du counts it.", nil, nil)
	indexCacheCapacityDesc = prometheus.NewDesc("nixcas_index_cache_capacity_bytes",
		"Most bytes of index blocks (chunk index, directories, PathInfo) kept in memory (--index-cache).", nil, nil)
	indexCacheBytesDesc = prometheus.NewDesc("nixcas_index_cache_bytes",
		"Bytes of index blocks kept in memory now.", nil, nil)
	indexCacheHitsDesc = prometheus.NewDesc("nixcas_index_cache_hits_total",
		"Index block reads served from memory.", nil, nil)
	indexCacheMissesDesc = prometheus.NewDesc("nixcas_index_cache_misses_total",
		"Index block reads that went to the disk (or the page cache).", nil, nil)
)

// scrapeTimeout bounds the reads of one scrape.
const scrapeTimeout = 10 * time.Second

// Describe implements prometheus.Collector.
func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storeStoredBytesDesc, storeUniqueBytesDesc, storeLogicalBytesDesc, storeChunksDesc, storePathsDesc, storeBlobsDesc, storeDirectoriesDesc, storeDiskBytesDesc, storeFramesDesc,
		indexCacheCapacityDesc, indexCacheBytesDesc, indexCacheHitsDesc, indexCacheMissesDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed read leaves its
// gauges out of the scrape and reports the error.
func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	if st, err := c.cas.Stats(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(storeStoredBytesDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(storeStoredBytesDesc, prometheus.GaugeValue, float64(st.StoredBytes))
		ch <- prometheus.MustNewConstMetric(storeUniqueBytesDesc, prometheus.GaugeValue, float64(st.UniqueChunkBytes))
		ch <- prometheus.MustNewConstMetric(storeLogicalBytesDesc, prometheus.GaugeValue, float64(st.LogicalBytes))
		ch <- prometheus.MustNewConstMetric(storeChunksDesc, prometheus.GaugeValue, float64(st.Chunks))
		ch <- prometheus.MustNewConstMetric(storeBlobsDesc, prometheus.GaugeValue, float64(st.Blobs))
		ch <- prometheus.MustNewConstMetric(storeDirectoriesDesc, prometheus.GaugeValue, float64(st.Directories))
		ch <- prometheus.MustNewConstMetric(storeFramesDesc, prometheus.GaugeValue, float64(st.Frames))
	}
	if du, ok := castore.As[castore.DiskUser](c.cas); ok {
		if n, err := du.DiskBytes(); err != nil {
			ch <- prometheus.NewInvalidMetric(storeDiskBytesDesc, err)
		} else {
			ch <- prometheus.MustNewConstMetric(storeDiskBytesDesc, prometheus.GaugeValue, float64(n))
		}
	}
	if p, ok := castore.As[*pebblestore.Store](c.cas); ok {
		if st, ok := p.IndexCacheStats(); ok {
			ch <- prometheus.MustNewConstMetric(indexCacheCapacityDesc, prometheus.GaugeValue, float64(st.Capacity))
			ch <- prometheus.MustNewConstMetric(indexCacheBytesDesc, prometheus.GaugeValue, float64(st.Used))
			ch <- prometheus.MustNewConstMetric(indexCacheHitsDesc, prometheus.CounterValue, float64(st.Hits))
			ch <- prometheus.MustNewConstMetric(indexCacheMissesDesc, prometheus.CounterValue, float64(st.Misses))
		}
	}
	if n, err := c.index.CountPaths(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(storePathsDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(storePathsDesc, prometheus.GaugeValue, float64(n))
	}
}
