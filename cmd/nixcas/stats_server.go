package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// serverStats reads a running server's store figures from the gauges on
// its /metrics (base is the server's HTTP address, http(s)://HOST:PORT),
// for a store that server has open: the same figures `store stats` reads
// from a store at rest.
func serverStats(ctx context.Context, base string) (statsOutput, error) {
	var out statsOutput
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return out, fmt.Errorf("--server %q: want the server's HTTP address, http://HOST:PORT", base)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := strings.TrimSuffix(base, "/") + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out, fmt.Errorf("--server: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("%s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return out, fmt.Errorf("%s: %w", url, err)
	}
	var disk uint64
	for name, p := range map[string]*uint64{
		"nixcas_store_logical_bytes":      &out.LogicalBytes,
		"nixcas_store_unique_chunk_bytes": &out.UniqueChunkBytes,
		"nixcas_store_stored_bytes":       &out.StoredBytes,
		"nixcas_store_chunks":             &out.Chunks,
		"nixcas_store_blobs":              &out.Blobs,
		"nixcas_store_directories":        &out.Directories,
		"nixcas_store_disk_bytes":         &disk,
	} {
		mf := families[name]
		if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge() == nil {
			return out, fmt.Errorf("%s: no %s gauge (is this a nixcas serve, and does its store answer?)", url, name)
		}
		*p = uint64(mf.GetMetric()[0].GetGauge().GetValue())
	}
	out.DiskBytes = int64(disk)
	// Servers from before frames do not export this one.
	if mf := families["nixcas_store_frames"]; mf != nil && len(mf.GetMetric()) == 1 && mf.GetMetric()[0].GetGauge() != nil {
		out.Frames = uint64(mf.GetMetric()[0].GetGauge().GetValue())
	}
	// Nor these, from before decoded frames were kept.
	value := func(name string) (float64, bool) {
		mf := families[name]
		if mf == nil || len(mf.GetMetric()) != 1 {
			return 0, false
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		}
		return 0, false
	}
	if v, ok := value("nixcas_decoded_cache_bytes"); ok {
		out.DecodedCacheBytes = int64(v)
		f, _ := value("nixcas_decoded_cache_files")
		h, _ := value("nixcas_decoded_cache_hits_total")
		m, _ := value("nixcas_decoded_cache_misses_total")
		hits, misses := uint64(h), uint64(m)
		out.DecodedCacheFiles, out.DecodedCacheHits, out.DecodedCacheMisses = int64(f), &hits, &misses
	}
	return out, nil
}
