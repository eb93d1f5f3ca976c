package httpcache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/store"
)

// fileStore is the optional power of an Index to keep the files Nix puts
// beside store paths (build logs, debug info links, realisations);
// *store.Index has it. Without it, such uploads are refused with 405 and
// reads find nothing.
type fileStore interface {
	PutFile(ctx context.Context, kind, name string, f store.File) error
	GetFile(ctx context.Context, kind, name string) (store.File, error)
}

var _ fileStore = (*store.Index)(nil)

// Upload bounds of the files kept beside store paths: a build log may be
// large; a debug info link or a realisation is a small JSON object.
const (
	maxLogFile   = 64 << 20
	maxSmallFile = 1 << 20
	// maxFileHeader bounds the Content-Type and Content-Encoding kept.
	maxFileHeader = 256
)

func maxFileSize(kind string) int64 {
	if kind == store.FileLog {
		return maxLogFile
	}
	return maxSmallFile
}

// putSideFile stores the body of PUT /<kind>/<name> as it comes (Nix 2.8
// sends logs as text/plain, debug info links and realisations as
// application/json, none compressed; other clients may set a
// Content-Encoding, which is kept and sent back).
func (h *handler) putSideFile(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		files, ok := h.o.Index.(fileStore)
		if !ok {
			http.Error(w, "this cache does not take uploads", http.StatusMethodNotAllowed)
			return
		}
		if err := store.ValidateFileName(kind, name); err != nil {
			httpError(w, r, err)
			return
		}
		ct, ce := r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding")
		if len(ct) > maxFileHeader || len(ce) > maxFileHeader {
			http.Error(w, fmt.Sprintf("%s/%s: Content-Type or Content-Encoding longer than %d bytes", kind, name, maxFileHeader), http.StatusBadRequest)
			return
		}
		limit := maxFileSize(kind)
		if r.ContentLength > limit {
			http.Error(w, fmt.Sprintf("%s/%s: %d bytes, more than the %d a %s file may have", kind, name, r.ContentLength, limit, kind), http.StatusRequestEntityTooLarge)
			return
		}
		body := &countingReader{r: io.LimitReader(r.Body, limit+1)}
		var src io.Reader = body
		if kind == store.FileRealisation && ce == "" {
			// Small: read it whole to check it is the realisation it
			// is named after.
			b, err := io.ReadAll(body)
			if err != nil {
				httpError(w, r, err)
				return
			}
			if int64(len(b)) <= limit {
				if err := checkRealisation(name, b); err != nil {
					httpError(w, r, err)
					return
				}
			}
			src = bytes.NewReader(b)
		}
		d, size, err := writeBlob(r.Context(), h.o.CAS, src)
		if err != nil {
			httpError(w, r, err)
			return
		}
		if body.n > uint64(limit) {
			http.Error(w, fmt.Sprintf("%s/%s: more than the %d bytes a %s file may have", kind, name, limit, kind), http.StatusRequestEntityTooLarge)
			return
		}
		f := store.File{ContentType: ct, ContentEncoding: ce, Blob: d, Size: size}
		if err := files.PutFile(r.Context(), kind, name, f); err != nil {
			httpError(w, r, err)
			return
		}
		h.m.received(body.n)
		w.WriteHeader(http.StatusCreated)
	}
}

// writeBlob stores r as a castore blob.
func writeBlob(ctx context.Context, cas castore.Store, r io.Reader) (castore.Digest, uint64, error) {
	bw, err := castore.NewWriter(cas, castore.WriterOptions{Workers: 1})
	if err != nil {
		return castore.Digest{}, 0, err
	}
	defer bw.Close()
	d, size, err := bw.WriteBlob(ctx, r)
	if err != nil {
		return castore.Digest{}, 0, err
	}
	if err := bw.Flush(ctx); err != nil {
		return castore.Digest{}, 0, err
	}
	return d, size, nil
}

// checkRealisation checks that b is the JSON of a realisation whose id is
// the one its file is named after and whose outPath is a store path.
func checkRealisation(name string, b []byte) error {
	var rz struct {
		ID      string `json:"id"`
		OutPath string `json:"outPath"`
	}
	if err := json.Unmarshal(b, &rz); err != nil {
		return fmt.Errorf("%w: realisation %s: %v", ErrInvalid, name, err)
	}
	id := strings.TrimSuffix(name, ".doi")
	if rz.ID != id {
		return fmt.Errorf("%w: realisation %s has id %q", ErrInvalid, name, rz.ID)
	}
	if _, err := store.ParsePathDigest(rz.OutPath[:min(32, len(rz.OutPath))]); err != nil || len(rz.OutPath) < 34 || rz.OutPath[32] != '-' {
		return fmt.Errorf("%w: realisation %s: outPath %q is not a store path base name", ErrInvalid, name, rz.OutPath)
	}
	return nil
}

// getSideFile serves GET and HEAD of /<kind>/<name> with the Content-Type
// and Content-Encoding it was uploaded with.
func (h *handler) getSideFile(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		files, ok := h.o.Index.(fileStore)
		if !ok {
			http.NotFound(w, r)
			return
		}
		f, err := files.GetFile(r.Context(), kind, name)
		if err != nil {
			httpError(w, r, err)
			return
		}
		var body io.ReadCloser = http.NoBody
		if r.Method != http.MethodHead {
			br, err := castore.OpenBlob(r.Context(), h.o.CAS, f.Blob, f.Size)
			if errors.Is(err, castore.ErrNotFound) {
				err = fmt.Errorf("%w: %s/%s: blob %s is missing", castore.ErrCorrupt, kind, name, f.Blob)
			}
			if err != nil {
				httpError(w, r, err)
				return
			}
			body = br
		}
		defer body.Close()
		ct := f.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		if f.ContentEncoding != "" {
			w.Header().Set("Content-Encoding", f.ContentEncoding)
		}
		w.Header().Set("Content-Length", strconv.FormatUint(f.Size, 10))
		// A failure once the headers are sent shows as a short body.
		io.Copy(w, body)
	}
}
