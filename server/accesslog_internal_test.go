package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkAccessLog measures what the access log adds to a request (the
// handler itself writes a short body): go test -run XXX -bench AccessLog ./server
func BenchmarkAccessLog(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("StoreDir: /nix/store\n")) })
	for _, bc := range []struct {
		name string
		log  *slog.Logger
	}{
		{"none", nil},
		{"text", slog.New(slog.NewTextHandler(io.Discard, nil))},
		{"json", slog.New(slog.NewJSONHandler(io.Discard, nil))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := httpAccessLog(bc.log, ok)
			r := httptest.NewRequest(http.MethodGet, "/nix-cache-info", nil)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
