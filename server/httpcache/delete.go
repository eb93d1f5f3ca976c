package httpcache

import (
	"context"
	"net/http"
	"strings"

	"github.com/nixcas/nixcas/store"
)

// pathDeleter is the power to delete store paths, which a *store.Index
// has and a read-only view of another server's index lacks.
type pathDeleter interface {
	Delete(ctx context.Context, d store.PathDigest) (bool, error)
}

// accessRecorder notes that a store path was read, for retention; a
// *store.Index has it.
type accessRecorder interface {
	RecordAccess(d store.PathDigest)
}

// deleteFile answers DELETE /<hash>.narinfo: the store path goes from the
// index (its data stays until a garbage collection), 204; 404 when it was
// not there; 405 when the index cannot delete. Tokens are checked as for
// uploads (authorize).
func (h *handler) deleteFile(w http.ResponseWriter, r *http.Request) {
	hash, ok := strings.CutSuffix(r.PathValue("file"), ".narinfo")
	if !ok {
		http.NotFound(w, r)
		return
	}
	del, ok := h.o.Index.(pathDeleter)
	if !ok {
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "this cache does not delete store paths", http.StatusMethodNotAllowed)
		return
	}
	d, err := store.ParsePathDigest(hash)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	deleted, err := del.Delete(r.Context(), d)
	if err != nil {
		httpError(w, r, err)
		return
	}
	if !deleted {
		http.Error(w, "store path "+hash+" is not in this cache", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// changeNotifier is the power of an index to report the paths put or
// deleted through it, which the narinfo cache needs; a *store.Index has
// it.
type changeNotifier interface {
	OnChange(fn func(store.PathDigest))
}

// recordAccess notes that p was read, when the index keeps access times.
func (h *handler) recordAccess(p *store.PathInfo) { h.recordAccessOf(p.Digest()) }
