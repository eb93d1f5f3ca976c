package httpcache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/dsnet/compress/bzip2"
	"github.com/nix-community/go-nix/pkg/narinfo"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// narFiles is the optional power of an Index to remember the names
// clients uploaded NAR files under (store.Index has it). Nix keeps the
// narinfo it uploaded in its own cache and later asks for the NAR at the
// URL it chose, nar/<filehash>.nar.<ext>, compressed as it said.
type narFiles interface {
	PutNARFile(ctx context.Context, url string, f store.NARFile) error
	GetNARFile(ctx context.Context, url string) (store.NARFile, error)
}

var _ narFiles = (*store.Index)(nil)

// How serveNAR encodes a NAR, besides the storedFormats and "bzip2".
const (
	encodeNone           = "none"            // the NAR itself
	encodeZstdCompressed = "zstd-compressed" // nar/<narhash>.nar.zst, really compressed
)

// servable reports whether a NAR file of that narinfo Compression can be
// served again.
func servable(compression string) bool {
	return compression == encodeNone || compression == "bzip2" || storedFormats[compression] != nil
}

// recordNARFile remembers the URL and compression the narinfo ni names
// for the NAR of p, so that GET and HEAD of that URL answer as the
// uploader expects. It does nothing when the Index cannot remember, or for
// a URL outside nar/ or a compression that cannot be served (no client
// could read such a file from nixcas anyway).
func (h *handler) recordNARFile(ctx context.Context, ni *narinfo.NarInfo, p *store.PathInfo) error {
	nf, ok := h.o.Index.(narFiles)
	if !ok {
		return nil
	}
	url := narInfoURL(ni)
	file, ok := strings.CutPrefix(url, "nar/")
	if !ok || file == "" || strings.Contains(file, "/") {
		return nil
	}
	compression := ni.Compression
	if compression == "" {
		compression = "bzip2" // as Nix reads a narinfo without one
	}
	if !servable(compression) {
		return nil
	}
	return nf.PutNARFile(ctx, url, store.NARFile{NARSha256: p.NARSha256, Compression: compression})
}

// serveUploaded serves nar/<file> if a client uploaded a NAR file under
// that name, and reports whether it answered.
func (h *handler) serveUploaded(w http.ResponseWriter, r *http.Request, file string) bool {
	nf, ok := h.o.Index.(narFiles)
	if !ok {
		return false
	}
	f, err := nf.GetNARFile(r.Context(), "nar/"+file)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err == nil && !servable(f.Compression) {
		err = fmt.Errorf("%w: NAR file %s: compression %q cannot be served", store.ErrNotFound, file, f.Compression)
	}
	var p *store.PathInfo
	if err == nil {
		p, err = h.o.Index.GetByNARHash(r.Context(), f.NARSha256)
	}
	if err == nil && p.NARSha256 != f.NARSha256 {
		// The path was put again with another NAR since.
		err = fmt.Errorf("%w: NAR file %s", store.ErrNotFound, file)
	}
	if err != nil {
		httpError(w, r, err)
		return true
	}
	h.recordAccess(p)
	h.serveNAR(w, r, p.Root, p.NARSize, `"`+file+`"`, f.Compression)
	return true
}

// serveBzip2 answers with the NAR of root compressed with bzip2 as it is
// rendered, the one format Nix writes that has no uncompressed mode. It
// costs CPU, its length is not known ahead (no Content-Length) and it
// does not serve ranges.
func (h *handler) serveBzip2(w http.ResponseWriter, r *http.Request, root castore.Entry, size uint64) {
	w.Header().Set("Content-Type", "application/x-bzip2")
	if r.Method == http.MethodHead {
		return
	}
	lw := &lazyWriter{w: w, status: http.StatusOK}
	zw, err := bzip2.NewWriter(lw, &bzip2.WriterConfig{Level: bzip2.BestSpeed})
	if err == nil {
		err = narrender.RenderRange(r.Context(), zw, h.tree, root, 0, size)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		h.m.narBytes(size)
	}
	h.finish(lw, r, err)
}
