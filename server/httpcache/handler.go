package httpcache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/server/auth"
	"github.com/nixcas/nixcas/store"
)

// ErrInvalid is wrapped by errors about malformed requests, narinfos and
// NAR files.
var ErrInvalid = errors.New("httpcache: invalid")

// Options configure the handler [New] returns.
type Options struct {
	// CAS holds the trees; Index the PathInfos over them. Both required.
	CAS   castore.Store
	Index Index
	// SignKeys each add a signature to every narinfo served that lacks
	// it (the index may have signed the path already: see
	// store.WithSigner).
	SignKeys []signature.SecretKey
	// Compression is how narinfos tell clients to fetch NARs: "none" (the
	// default) or "zstd" (compressed on the fly).
	Compression string
	// PushToken, when set, is required for uploads; ReadToken, when set,
	// for reads (which the push token also allows). With a read token and
	// no push token, uploads are refused.
	PushToken, ReadToken string
	// RefuseAnonymousWrites refuses uploads when no push token is set.
	RefuseAnonymousWrites bool
	// Registerer receives the handler's metrics; nil means none.
	Registerer prometheus.Registerer
	// Priority is the nix-cache-info Priority (default 40; Nix prefers
	// lower values, cache.nixos.org has 40).
	Priority int
	// MaxUploads and MaxRenders bound the NAR uploads and the NAR
	// responses being rendered at once (0: no bound); requests beyond
	// them are answered 503 with Retry-After.
	MaxUploads, MaxRenders int
	// Tree bounds the expanded tree of a nar/snix-castore/ root, which
	// is measured (each distinct directory once) before anything is
	// rendered; zero fields take castore's defaults (10 million entries,
	// 1 TiB of files, 65,536 levels).
	Tree castore.TreeLimits
	// RenderTimeout bounds each NAR response, rendering and sending
	// together; default DefaultRenderTimeout.
	RenderTimeout time.Duration
	// NarInfoCacheSize bounds the memory, in bytes, of the narinfos kept
	// as served, so that serving one again reads nothing from the index
	// (0: none kept). It needs an index that reports its changes
	// (store.Index.OnChange): a path put or deleted through it is
	// forgotten at once. New refuses any other index.
	NarInfoCacheSize int64
	// NarInfoCacheTTL bounds how long a kept narinfo is served without
	// reading the index again (0: until its path changes): for an index
	// that other processes change too (several servers on one database),
	// whose changes it does not report.
	NarInfoCacheTTL time.Duration
	// TreeCacheSize bounds the memory, in bytes, of the directories and
	// blob indexes that NAR responses read, kept so that a NAR served
	// again reads them from memory (castore.TreeCache; 0: none kept).
	TreeCacheSize int64
}

// DefaultRenderTimeout is the default Options.RenderTimeout: a 4 GiB NAR
// at 2 MB/s.
const DefaultRenderTimeout = 40 * time.Minute

// Index is what the handler needs of a PathInfo index: a *store.Index,
// or a read-only view of another server's (whose Put fails).
type Index interface {
	// Get returns the PathInfo of the store path whose hash is d.
	Get(ctx context.Context, d store.PathDigest) (*store.PathInfo, error)
	// GetByNARHash returns the PathInfo of a store path whose NAR has
	// that SHA-256.
	GetByNARHash(ctx context.Context, h [sha256.Size]byte) (*store.PathInfo, error)
	// Put records p, checking its tree is in the castore.
	Put(ctx context.Context, p *store.PathInfo) error
}

var _ Index = (*store.Index)(nil)

// PathNARIndex is an optional power of an Index that knows NAR hashes
// from the lookups it made (a proxy: it holds no index of NAR hashes, and
// finding one it forgot means searching its upstream). Told the store
// path as well, it looks that path up instead. The narinfos of a handler
// whose Index has it give NAR URLs that name the store path
// (nar/<narhash>.nar?hash=<storehash>; Nix asks for a narinfo's URL as it
// is), so that a NAR asked for long after its narinfo (Nix keeps
// narinfos for weeks), across a restart or more lookups than the index
// remembers, is still found.
type PathNARIndex interface {
	// GetByNARHashOf returns the PathInfo of the store path whose hash
	// is d, if its NAR has the SHA-256 h (else store.ErrNotFound), ready
	// to be served as GetByNARHash's.
	GetByNARHashOf(ctx context.Context, h [sha256.Size]byte, d store.PathDigest) (*store.PathInfo, error)
}

// DefaultPriority is the nix-cache-info Priority when Options.Priority is 0.
const DefaultPriority = 40

// Limits of the upload memory: how many NARs put without their narinfo yet
// are remembered, and for how long.
const (
	maxUploads = 4096
	uploadTTL  = time.Hour
)

func (o Options) validate() (Options, error) {
	if o.CAS == nil || o.Index == nil {
		return o, fmt.Errorf("%w: options: CAS and Index are required", ErrInvalid)
	}
	switch o.Compression {
	case "":
		o.Compression = "none"
	case "none", "zstd":
	default:
		return o, fmt.Errorf(`%w: options: compression %q, want "none" or "zstd"`, ErrInvalid, o.Compression)
	}
	if o.Priority == 0 {
		o.Priority = DefaultPriority
	}
	if o.RenderTimeout == 0 {
		o.RenderTimeout = DefaultRenderTimeout
	}
	if o.RenderTimeout < 0 {
		return o, fmt.Errorf("%w: options: render timeout %v", ErrInvalid, o.RenderTimeout)
	}
	o.Tree = o.Tree.WithDefaults()
	if err := o.Tree.Validate(); err != nil {
		return o, fmt.Errorf("%w: options: %v", ErrInvalid, err)
	}
	if o.Priority < 0 {
		return o, fmt.Errorf("%w: options: negative priority %d", ErrInvalid, o.Priority)
	}
	if o.TreeCacheSize < 0 {
		return o, fmt.Errorf("%w: options: tree cache of %d bytes", ErrInvalid, o.TreeCacheSize)
	}
	if o.NarInfoCacheSize < 0 || o.NarInfoCacheTTL < 0 {
		return o, fmt.Errorf("%w: options: narinfo cache of %d bytes, TTL %v", ErrInvalid, o.NarInfoCacheSize, o.NarInfoCacheTTL)
	}
	return o, nil
}

// handler serves one store; see the package documentation.
type handler struct {
	o         Options
	cacheInfo []byte
	sigs      *store.Signer // nil without keys
	uploads   *uploads
	m         *metrics
	narInfos  *narInfoCache     // nil: none kept
	tree      castore.ReadStore // what NARs are rendered from: o.CAS, or a TreeCache over it
	access    accessRecorder    // nil: the index keeps no access times
	zstd      zstdPool
	// lastPrune: unix seconds of the last pruning of expired pending
	// uploads in the store (see putNAR).
	lastPrune atomic.Int64
}

// New returns the binary cache handler over o.CAS and o.Index, meant to be
// mounted at the root of a server. It is safe for concurrent use. It
// registers its metrics with o.Registerer, reusing collectors already
// registered there under the same names.
func New(o Options) (http.Handler, error) {
	o, err := o.validate()
	if err != nil {
		return nil, err
	}
	sigs, err := store.NewSigner(o.SignKeys...)
	if err != nil {
		return nil, fmt.Errorf("%w: options: %v", ErrInvalid, err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	h := &handler{
		o:         o,
		cacheInfo: fmt.Appendf(nil, "StoreDir: %s\nWantMassQuery: 1\nPriority: %d\n", store.StoreDir, o.Priority),
		sigs:      sigs,
		uploads:   newUploads(maxUploads, uploadTTL),
		m:         m,
		tree:      o.CAS,
	}
	if o.TreeCacheSize > 0 {
		tc := castore.NewTreeCache(o.CAS, o.TreeCacheSize)
		if err := m.registerTreeCache(o.Registerer, tc); err != nil {
			return nil, err
		}
		h.tree = tc
	}
	h.access, _ = o.Index.(accessRecorder)
	if o.NarInfoCacheSize > 0 {
		n, ok := o.Index.(changeNotifier)
		if !ok {
			return nil, fmt.Errorf("%w: options: a narinfo cache needs an index that reports its changes, and %T does not", ErrInvalid, o.Index)
		}
		h.narInfos = newNarInfoCache(o.NarInfoCacheSize, o.NarInfoCacheTTL)
		if err := m.registerNarInfoCache(o.Registerer, h.narInfos); err != nil {
			return nil, err
		}
		n.OnChange(h.narInfos.invalidate)
	}
	renders := newInFlight(o.MaxRenders, "NAR downloads", m.inFlight.WithLabelValues("render"))
	uploads := newInFlight(o.MaxUploads, "uploads", m.inFlight.WithLabelValues("upload"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nix-cache-info", h.getCacheInfo)
	mux.HandleFunc("GET /{file}", h.getFile)
	mux.HandleFunc("GET /nar/{file}", renders.limit(h.getNAR))
	mux.HandleFunc("GET /nar/snix-castore/{entry}", renders.limit(h.getCastoreNAR))
	mux.HandleFunc("PUT /{file}", uploads.limit(h.putFile))
	mux.HandleFunc("PUT /nar/{file}", uploads.limit(h.putNAR))
	mux.HandleFunc("DELETE /{file}", h.deleteFile)
	for _, kind := range []string{store.FileLog, store.FileDebugInfo, store.FileRealisation} {
		mux.HandleFunc("GET /"+kind+"/{file}", h.getSideFile(kind))
		mux.HandleFunc("PUT /"+kind+"/{file}", uploads.limit(h.putSideFile(kind)))
	}
	return m.instrument(h.authorize(mux)), nil
}

func (h *handler) getCacheInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/x-nix-cache-info")
	w.Write(h.cacheInfo)
}

// getFile serves <hash>.narinfo and <hash>.ls.
func (h *handler) getFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if hash, ok := strings.CutSuffix(file, ".narinfo"); ok {
		h.getNarInfo(w, r, hash)
		return
	}
	if hash, ok := strings.CutSuffix(file, ".ls"); ok {
		h.getListing(w, r, hash)
		return
	}
	http.NotFound(w, r)
}

// putFile accepts <hash>.narinfo; listings (<hash>.ls) and nix-cache-info
// are accepted and dropped, as the handler makes its own.
func (h *handler) putFile(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if hash, ok := strings.CutSuffix(file, ".narinfo"); ok {
		h.putNarInfo(w, r, hash)
		return
	}
	if strings.HasSuffix(file, ".ls") || file == "nix-cache-info" {
		drain(r, 64<<20)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.NotFound(w, r)
}

// pathInfo looks up the store path whose hash is hash, answering 404 (for
// a malformed hash too) or 500 itself when there is none.
func (h *handler) pathInfo(w http.ResponseWriter, r *http.Request, hash string) (*store.PathInfo, bool) {
	d, err := store.ParsePathDigest(hash)
	if err != nil {
		http.NotFound(w, r)
		return nil, false
	}
	return h.lookupPathInfo(w, r, d)
}

// lookupPathInfo is pathInfo of a parsed hash.
func (h *handler) lookupPathInfo(w http.ResponseWriter, r *http.Request, d store.PathDigest) (*store.PathInfo, bool) {
	p, err := h.o.Index.Get(r.Context(), d)
	if errors.Is(err, store.ErrUnavailable) {
		// A proxy whose upstream is down: 404 makes Nix go on to its
		// next substituter at once, where any other status would make
		// it retry, then fail the substitution (without --fallback).
		slog.WarnContext(r.Context(), "httpcache: upstream unavailable", "path", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusNotFound)
		return nil, false
	}
	if err != nil {
		httpError(w, r, err)
		return nil, false
	}
	return p, true
}

// authorize checks tokens, with the server's auth.Checker, before passing
// requests to next. GET and HEAD are reads, every other method a write.
func (h *handler) authorize(next http.Handler) http.Handler {
	c := auth.New(auth.Policy{PushToken: h.o.PushToken, ReadToken: h.o.ReadToken, RefuseAnonymousWrites: h.o.RefuseAnonymousWrites})
	if c.Policy().WritesOpen() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		write := r.Method != http.MethodGet && r.Method != http.MethodHead
		token, present := requestToken(r)
		err := c.Check(write, token, present)
		switch {
		case err == nil:
			next.ServeHTTP(w, r)
		case errors.Is(err, auth.ErrTokenRequired):
			w.Header().Add("WWW-Authenticate", `Basic realm="nixcas"`)
			w.Header().Add("WWW-Authenticate", `Bearer realm="nixcas"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
		default:
			http.Error(w, err.Error(), http.StatusForbidden)
		}
	})
}

// requestToken returns the bearer token or the basic-auth password.
func requestToken(r *http.Request) (string, bool) {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
		return strings.TrimSpace(a[7:]), true
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw, true
	}
	return "", false
}

// httpError answers with the status err stands for.
func httpError(w http.ResponseWriter, r *http.Request, err error) {
	code := statusOf(err)
	if code == http.StatusInternalServerError {
		slog.ErrorContext(r.Context(), "httpcache: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if errors.Is(err, castore.ErrUnavailable) {
		// Nix retries a 503; the store's object storage may be back by then.
		slog.WarnContext(r.Context(), "httpcache: object storage unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "5")
	}
	msg := http.StatusText(code)
	if code == http.StatusBadRequest || code == http.StatusNotFound {
		msg = err.Error()
	}
	http.Error(w, msg, code)
}

// statusOf translates an error to an HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, castore.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, store.ErrInvalid),
		errors.Is(err, castore.ErrInvalid), errors.Is(err, narrender.ErrFormat):
		return http.StatusBadRequest
	case errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout // a client too slow to send its body
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusBadGateway
	case errors.Is(err, castore.ErrUnavailable):
		return http.StatusServiceUnavailable // the store's object storage
	case errors.Is(err, castore.ErrNoSpace):
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}
