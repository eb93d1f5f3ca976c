package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeNarInfoCacheFlag: serve keeps narinfos by default (its metrics
// are on /metrics) and keeps none with --narinfo-cache 0.
func TestServeNarInfoCacheFlag(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--narinfo-cache", "1M"}, true},
		{[]string{"--narinfo-cache", "0"}, false},
	} {
		srv := startGRPCServe(t, data, tc.args...)
		_, metrics := httpDo(t, http.DefaultClient, http.MethodGet, "http://"+srv.httpAddr+"/metrics", "")
		for _, m := range []string{"nixcas_http_narinfo_cache_bytes ", "nixcas_http_narinfo_cache_hits_total ", "nixcas_http_narinfo_cache_misses_total "} {
			if got := strings.Contains(metrics, m); got != tc.want {
				t.Errorf("serve %q: /metrics has %q: %v, want %v", tc.args, m, got, tc.want)
			}
		}
		srv.stop(t)
	}
}
