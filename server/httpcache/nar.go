package httpcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"google.golang.org/protobuf/proto"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/store"
)

// getNAR serves nar/<narhash>.nar and nar/<narhash>.nar.zst, and the
// names clients uploaded NAR files under.
func (h *handler) getNAR(w http.ResponseWriter, r *http.Request) {
	r, cancel := h.renderBudget(r)
	defer cancel()
	file := r.PathValue("file")
	name, zst := strings.CutSuffix(file, ".nar.zst")
	if !zst {
		name, _ = strings.CutSuffix(file, ".nar")
	}
	if sum, ok := parseNARHash(name); ok && name != file {
		if !zst && h.streamFetching(w, r, sum) {
			return
		}
		p, err := h.pathOfNAR(r, sum)
		if err == nil && p.NARSha256 != sum {
			// The path was put again with another NAR since.
			err = fmt.Errorf("%w: NAR %s", store.ErrNotFound, name)
		}
		if err == nil {
			etag, enc := `"`+name+`"`, encodeNone
			if zst {
				etag, enc = `"`+name+`.zst"`, encodeZstdCompressed
			}
			h.recordAccess(p)
			h.serveNAR(w, r, p.Root, p.NARSize, etag, enc)
			return
		}
		if !errors.Is(err, store.ErrNotFound) || !h.serveUploaded(w, r, file) {
			httpError(w, r, err)
		}
		return
	}
	if !h.serveUploaded(w, r, file) {
		http.NotFound(w, r)
	}
}

// fetchingNARs is the optional power of an Index that fetches NARs on
// demand to follow a fetch as it goes (PullThrough.OpenFetching).
type fetchingNARs interface {
	OpenFetching(ctx context.Context, h [sha256.Size]byte, d *store.PathDigest) (io.ReadCloser, uint64, bool, error)
}

// streamFetching answers a whole GET of the NAR sum from the fetch of it
// in progress, when the index has one to follow (fetchingNARs), and
// reports whether it answered. The response has the NAR's Content-Length;
// should the fetch fail midway, the connection is cut, so the client
// sees a short body rather than a whole one. Other requests (HEAD,
// ranges, conditional ones), and a NAR with no fetch to follow, are
// served as usual.
func (h *handler) streamFetching(w http.ResponseWriter, r *http.Request, sum [sha256.Size]byte) bool {
	x, ok := h.o.Index.(fetchingNARs)
	if !ok || r.Method != http.MethodGet || r.Header.Get("Range") != "" || r.Header.Get("If-None-Match") != "" {
		return false
	}
	var d *store.PathDigest
	if pd, ok := narPathOf(r); ok {
		d = &pd
	}
	rc, size, ok, err := x.OpenFetching(r.Context(), sum, d)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false // served as usual: a NAR file uploaded under that name, or 404
	case err != nil:
		httpError(w, r, err) // rather than asking the upstream again
		return true
	case !ok:
		return false
	}
	defer rc.Close()
	// The first bytes before the headers: a fetch that fails before
	// sending any is answered with its error's status, as without
	// streaming.
	first := make([]byte, 32<<10)
	k, err := io.ReadAtLeast(rc, first, 1)
	var failed fetchFailed
	switch {
	case errors.As(err, &failed):
		httpError(w, r, fmt.Errorf("fetching NAR %s from the upstream: %w", nixbase32.EncodeToString(sum[:]), failed.err))
		return true
	case err != nil:
		return false // the spool failed, or the request ended: served as usual
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/x-nix-nar")
	hdr.Set("Content-Length", strconv.FormatUint(size, 10))
	n, err := io.Copy(w, io.MultiReader(bytes.NewReader(first[:k]), rc))
	if err == nil && uint64(n) != size {
		err = fmt.Errorf("the upstream's NAR has %d bytes, its narinfo says %d", n, size)
	}
	if err != nil {
		slog.Warn("pull-through: NAR sent while fetched cut short", "nar", nixbase32.EncodeToString(sum[:]), "sent", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	h.m.narBytes(size)
	return true
}

// pathOfNAR returns the PathInfo of the store path whose NAR has the
// SHA-256 sum: through the store path the URL names (?hash=), when the
// index has the power to look it up so (PathNARIndex), else by the NAR
// hash alone.
func (h *handler) pathOfNAR(r *http.Request, sum [sha256.Size]byte) (*store.PathInfo, error) {
	if x, ok := h.o.Index.(PathNARIndex); ok {
		if d, ok := narPathOf(r); ok {
			return x.GetByNARHashOf(r.Context(), sum, d)
		}
	}
	return h.o.Index.GetByNARHash(r.Context(), sum)
}

// narPathOf returns the store path a NAR request's URL names (?hash=,
// see narInfoText), if it names a valid one.
func narPathOf(r *http.Request) (store.PathDigest, bool) {
	d, err := store.ParsePathDigest(r.URL.Query().Get(narPathQuery))
	return d, err == nil
}

// parseNARHash decodes the 52 nixbase32 characters of a NAR's SHA-256.
func parseNARHash(s string) ([sha256.Size]byte, bool) {
	var sum [sha256.Size]byte
	if len(s) != nixbase32.EncodedLen(sha256.Size) {
		return sum, false
	}
	b, err := nixbase32.DecodeString(s)
	if err != nil {
		return sum, false
	}
	copy(sum[:], b)
	return sum, true
}

// renderBudget returns r with its context bounded by the render timeout,
// and the function releasing it.
func (h *handler) renderBudget(r *http.Request) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), h.o.RenderTimeout,
		fmt.Errorf("%w: the NAR response took longer than the server's render timeout (%v)", context.DeadlineExceeded, h.o.RenderTimeout))
	return r.WithContext(ctx), cancel
}

// getCastoreNAR serves nar/snix-castore/<base64url Entry>?narsize=N, the
// NAR of any stored tree. The tree is first measured against the tree
// limits (a small directory graph can describe an enormous tree), then
// its size is computed from its directories; a narsize that disagrees is
// refused.
func (h *handler) getCastoreNAR(w http.ResponseWriter, r *http.Request) {
	r, cancel := h.renderBudget(r)
	defer cancel()
	enc := r.PathValue("entry")
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		httpError(w, r, fmt.Errorf("%w: entry %q: %v", ErrInvalid, enc, err))
		return
	}
	var pb castorepb.Entry
	if err := proto.Unmarshal(b, &pb); err != nil {
		httpError(w, r, fmt.Errorf("%w: entry %q: %v", ErrInvalid, enc, err))
		return
	}
	root, err := castore.EntryFromProto(&pb)
	if err != nil {
		httpError(w, r, err)
		return
	}
	if _, err := castore.MeasureTree(r.Context(), h.tree, root, h.o.Tree); err != nil {
		httpError(w, r, err)
		return
	}
	size, err := narrender.Size(r.Context(), h.tree, root)
	if err != nil {
		httpError(w, r, err)
		return
	}
	if q := r.URL.Query().Get("narsize"); q != "" {
		if n, err := strconv.ParseUint(q, 10, 64); err != nil || n != size {
			httpError(w, r, fmt.Errorf("%w: narsize %q, the NAR has %d bytes", ErrInvalid, q, size))
			return
		}
	}
	h.serveNAR(w, r, root, size, `"`+strings.TrimRight(enc, "=")+`"`, encodeNone)
}

// serveNAR answers with the NAR of root (size bytes, identified by etag),
// encoded as enc says: itself (encodeNone), compressed with zstd
// (encodeZstdCompressed), with bzip2, or in one of the storedFormats.
// Itself and in a stored format, it has an exact Content-Length and is
// served whole or as one range. RenderRange renders whole NARs too: it
// spares small files their blob-index look-up.
func (h *handler) serveNAR(w http.ResponseWriter, r *http.Request, root castore.Entry, size uint64, etag, enc string) {
	hdr := w.Header()
	hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	hdr.Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && (inm == etag || inm == "*") {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	render := func(w io.Writer, off, n uint64) error {
		return narrender.RenderRange(r.Context(), w, h.tree, root, off, n)
	}
	switch f := storedFormats[enc]; {
	case enc == encodeNone:
		h.serveRanged(w, r, size, etag, "application/x-nix-nar", render)
	case f != nil:
		h.serveRanged(w, r, f.size(size), etag, f.contentType, func(w io.Writer, off, n uint64) error {
			return f.writeRange(w, size, off, n, render)
		})
	case enc == "bzip2":
		h.serveBzip2(w, r, root, size)
	case enc == encodeZstdCompressed:
		hdr.Set("Content-Type", "application/zstd")
		if r.Method == http.MethodHead {
			return
		}
		lw := &lazyWriter{w: w, status: http.StatusOK}
		zw := h.zstd.get(lw)
		err := render(zw, 0, size)
		if err == nil {
			err = zw.Close()
		}
		h.zstd.put(zw)
		if err == nil {
			h.m.narBytes(size)
		}
		h.finish(lw, r, err)
	default:
		httpError(w, r, fmt.Errorf("%w: NAR encoded as %q", store.ErrNotFound, enc))
	}
}

// serveRanged answers with a body of size bytes that render writes, whole
// or as the one range the request asks for.
func (h *handler) serveRanged(w http.ResponseWriter, r *http.Request, size uint64, etag, contentType string, render renderFunc) {
	hdr := w.Header()
	hdr.Set("Content-Type", contentType)
	hdr.Set("Accept-Ranges", "bytes")
	off, n, status := parseRange(r.Header.Get("Range"), size)
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		off, n, status = 0, size, http.StatusOK
	}
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		hdr.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		http.Error(w, "range not satisfiable", status)
		return
	case http.StatusPartialContent:
		hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
	}
	hdr.Set("Content-Length", strconv.FormatUint(n, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	lw := &lazyWriter{w: w, status: status}
	err := render(lw, off, n)
	if err == nil {
		h.m.narBytes(n)
	}
	h.finish(lw, r, err)
}

// finish ends a streamed response: on error, with an error status if
// nothing was sent yet, else by aborting the connection so the client
// sees a truncated body rather than a complete one.
func (h *handler) finish(lw *lazyWriter, r *http.Request, err error) {
	if err == nil {
		lw.commit()
		return
	}
	if !lw.started {
		for _, k := range []string{"Content-Length", "Content-Range", "Cache-Control", "ETag", "Accept-Ranges"} {
			lw.w.Header().Del(k)
		}
		httpError(lw.w, r, err)
		return
	}
	if r.Context().Err() == nil {
		slog.ErrorContext(r.Context(), "httpcache: response cut short", "path", r.URL.Path, "err", err)
	}
	panic(http.ErrAbortHandler)
}

// lazyWriter sends the status line only with the first byte of the body,
// so that an error before it can still be answered with an error status.
type lazyWriter struct {
	w       http.ResponseWriter
	status  int
	started bool
}

func (l *lazyWriter) commit() {
	if !l.started {
		l.started = true
		l.w.WriteHeader(l.status)
	}
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	l.commit()
	return l.w.Write(p)
}

var _ narrender.FileSender = (*lazyWriter)(nil)

// SendFile implements narrender.FileSender: it hands the n bytes to the
// response writer as an *io.LimitedReader of f, which every writer
// wrapping the response passes on to the next one's ReadFrom, so that
// http.Server's sends them with sendfile on a TCP connection.
func (l *lazyWriter) SendFile(f *os.File, n int64) (int64, error) {
	l.commit()
	return io.Copy(l.w, &io.LimitedReader{R: f, N: n})
}

// parseRange interprets a Range header for a body of size bytes: one
// satisfiable range gives its offset and length with 206; a range that
// starts past the end gives 416; no header, several ranges, or a header
// that does not parse give the whole body with 200, as RFC 9110 allows.
func parseRange(header string, size uint64) (off, n uint64, status int) {
	whole := func() (uint64, uint64, int) { return 0, size, http.StatusOK }
	spec, ok := strings.CutPrefix(header, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return whole()
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return whole()
	}
	if first == "" { // suffix: the last N bytes
		k, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			return whole()
		}
		if k == 0 {
			return 0, 0, http.StatusRequestedRangeNotSatisfiable
		}
		k = min(k, size)
		return size - k, k, http.StatusPartialContent
	}
	start, err := strconv.ParseUint(first, 10, 64)
	if err != nil {
		return whole()
	}
	end := size - 1
	if last != "" {
		e, err := strconv.ParseUint(last, 10, 64)
		if err != nil || e < start {
			return whole()
		}
		end = min(e, size-1)
	}
	if start >= size {
		return 0, 0, http.StatusRequestedRangeNotSatisfiable
	}
	return start, end - start + 1, http.StatusPartialContent
}

// zstdPool keeps zstd encoders for reuse; each is expensive to make.
type zstdPool struct{ p sync.Pool }

func (z *zstdPool) get(w io.Writer) *zstd.Encoder {
	if e, ok := z.p.Get().(*zstd.Encoder); ok {
		e.Reset(w)
		return e
	}
	// The options are valid, so NewWriter cannot fail.
	e, _ := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	return e
}

func (z *zstdPool) put(e *zstd.Encoder) {
	e.Reset(nil)
	z.p.Put(e)
}
