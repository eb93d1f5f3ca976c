package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
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
	fields := map[string]*uint64{
		"nixcas_store_logical_bytes":      &out.LogicalBytes,
		"nixcas_store_unique_chunk_bytes": &out.UniqueChunkBytes,
		"nixcas_store_stored_bytes":       &out.StoredBytes,
		"nixcas_store_chunks":             &out.Chunks,
		"nixcas_store_blobs":              &out.Blobs,
		"nixcas_store_directories":        &out.Directories,
	}
	var disk uint64
	fields["nixcas_store_disk_bytes"] = &disk
	found := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		p := fields[name]
		if !ok || p == nil {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return out, fmt.Errorf("%s: %s: %v", url, name, err)
		}
		*p = uint64(f)
		found[name] = true
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%s: %w", url, err)
	}
	for name := range fields {
		if !found[name] {
			return out, fmt.Errorf("%s: no %s gauge (is this a nixcas serve, and does its store answer?)", url, name)
		}
	}
	out.DiskBytes = int64(disk)
	return out, nil
}
