package server

import (
	"context"
	"net/http"
	"time"
)

// readyTimeout bounds the store probe of /readyz.
const readyTimeout = 5 * time.Second

// handleHealth adds the probes to mux, open to everyone whatever the
// tokens: /healthz answers 200 while the process serves; /readyz answers
// 200 when the store is open and answers a read (its counters) and its
// object storage, if it has any (S3), answers too, else 503 with the
// reason.
func (s *Server) handleHealth(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if _, err := s.store.Stats(ctx); err != nil {
			http.Error(w, "store not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := s.store.ProbeObjects(ctx); err != nil {
			http.Error(w, "object storage not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ready\n"))
	})
}
