package httpcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/nixbase32"
	"github.com/nix-community/go-nix/pkg/nixhash"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/narrender"
	"github.com/nixcas/nixcas/store"
)

// maxNarInfo bounds a narinfo upload.
const maxNarInfo = 4 << 20

// upload is a NAR ingested by PUT, waiting for its narinfo.
type upload struct {
	url      string // "nar/<file>", as a narinfo's URL names it
	nar      narrender.Result
	fileHash [sha256.Size]byte // of the bytes put (compressed)
	fileSize uint64
	expires  time.Time
	gone     bool // taken or evicted; still in the queue
}

// putNAR ingests nar/<file>, decompressing as it streams in.
func (h *handler) putNAR(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	if !strings.Contains(file, ".nar") {
		http.NotFound(w, r)
		return
	}
	fh := sha256.New()
	body := &countingReader{r: io.TeeReader(r.Body, fh)}
	up, err := ingestFile(r, body, compressionOfName(file), countingStore{Store: h.o.CAS, m: h.m})
	if err == nil {
		// Whatever follows the compressed stream is part of the file.
		_, err = io.Copy(io.Discard, body)
	}
	if err == nil {
		// The NAR reader bounds depth at castore.MaxDepth; the tree
		// limits may be lower.
		_, err = castore.MeasureTree(r.Context(), h.o.CAS, up.nar.Root, h.o.Tree)
	}
	if err != nil {
		httpError(w, r, err)
		return
	}
	up.url = "nar/" + file
	up.fileSize = body.n
	fh.Sum(up.fileHash[:0])
	h.uploads.add(up)
	if ps, ok := h.o.Index.(pendingUploadStore); ok {
		// The narinfo may reach another server on the same records.
		err := ps.PutPendingUpload(r.Context(), store.PendingUpload{
			URL: up.url, Root: up.nar.Root, NARSize: up.nar.NARSize, NARSha256: up.nar.NARSha256,
			FileHash: up.fileHash, FileSize: up.fileSize, Expires: up.expires,
		})
		if err != nil {
			h.uploads.remove(up)
			httpError(w, r, err)
			return
		}
		// Uploads whose narinfo never came go, at most once a minute.
		now, last := time.Now().Unix(), h.lastPrune.Load()
		if now-last >= 60 && h.lastPrune.CompareAndSwap(last, now) {
			if pr, ok := ps.(interface {
				PrunePendingUploads(context.Context, time.Time) (int, error)
			}); ok {
				_, _ = pr.PrunePendingUploads(r.Context(), time.Now())
			}
		}
	}
	h.m.received(body.n)
	w.WriteHeader(http.StatusCreated)
}

func ingestFile(r *http.Request, body io.Reader, compression string, cas castore.Store) (*upload, error) {
	nar, err := decompress(body, compression)
	if err != nil {
		return nil, err
	}
	defer nar.Close()
	res, err := narrender.Ingest(r.Context(), nar, cas, castore.WriterOptions{})
	if err != nil {
		return nil, err
	}
	return &upload{nar: res}, nil
}

// putNarInfo records the PathInfo a narinfo describes, for a NAR put
// before (or already stored).
func (h *handler) putNarInfo(w http.ResponseWriter, r *http.Request, hash string) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxNarInfo+1))
	if err != nil {
		httpError(w, r, err)
		return
	}
	if len(b) > maxNarInfo {
		http.Error(w, "narinfo too large", http.StatusRequestEntityTooLarge)
		return
	}
	ni, err := narinfo.Parse(bytes.NewReader(b))
	if err != nil {
		httpError(w, r, fmt.Errorf("%w: narinfo: %v", ErrInvalid, err))
		return
	}
	p, up, err := h.pathInfoOf(r, hash, ni)
	if err != nil {
		code := statusOf(err)
		if errors.Is(err, castore.ErrCorrupt) {
			code = http.StatusBadRequest
		}
		http.Error(w, err.Error(), code)
		return
	}
	if err := h.recordNARFile(r.Context(), ni, p); err != nil {
		httpError(w, r, err)
		return
	}
	if err := h.o.Index.Put(r.Context(), p); err != nil {
		httpError(w, r, err)
		return
	}
	if up != nil {
		h.uploads.remove(up)
		if ps, ok := h.o.Index.(pendingUploadStore); ok {
			// Best effort: a record left behind expires.
			_ = ps.DeletePendingUpload(r.Context(), up.url, up.nar.NARSha256)
		}
	}
	w.WriteHeader(http.StatusCreated)
}

// pathInfoOf checks a narinfo put at <hash>.narinfo and makes its PathInfo
// from the NAR it names, returning the pending upload used, if any.
func (h *handler) pathInfoOf(r *http.Request, hash string, ni *narinfo.NarInfo) (*store.PathInfo, *upload, error) {
	if err := ni.Check(); err != nil {
		return nil, nil, fmt.Errorf("%w: narinfo: %v", ErrInvalid, err)
	}
	if err := checkNarInfoFields(ni); err != nil {
		return nil, nil, err
	}
	sp, err := storepath.FromAbsolutePath(ni.StorePath)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: narinfo: store path %q: %v", ErrInvalid, ni.StorePath, err)
	}
	if len(hash) != 32 || hash != sp.String()[:32] {
		return nil, nil, fmt.Errorf("%w: narinfo for %s put at %s.narinfo", ErrInvalid, ni.StorePath, hash)
	}
	narSum, err := sha256Of(ni.NarHash, "NarHash")
	if err != nil {
		return nil, nil, err
	}

	// The NAR: put under the narinfo's URL, or under another one with the
	// same hash, or already stored.
	var res narrender.Result
	up := h.uploads.get(narInfoURL(ni), narSum)
	if ps, ok := h.o.Index.(pendingUploadStore); ok && up == nil {
		pu, err := ps.PendingUpload(r.Context(), narInfoURL(ni), narSum)
		switch {
		case err == nil:
			up = &upload{url: pu.URL, fileHash: pu.FileHash, fileSize: pu.FileSize, expires: pu.Expires,
				nar: narrender.Result{Root: pu.Root, NARSize: pu.NARSize, NARSha256: pu.NARSha256}}
		case !errors.Is(err, store.ErrNotFound):
			return nil, nil, err
		}
	}
	if up != nil {
		res = up.nar
		if up.url == narInfoURL(ni) {
			if err := checkFile(ni, up); err != nil {
				return nil, nil, err
			}
		}
	} else {
		old, err := h.o.Index.GetByNARHash(r.Context(), narSum)
		if err == nil && old.NARSha256 != narSum {
			err = store.ErrNotFound // that path has another NAR now
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, fmt.Errorf("%w: narinfo for %s: no NAR was put at %q, and none with hash %s is stored", ErrInvalid, ni.StorePath, ni.URL, ni.NarHash)
		}
		if err != nil {
			return nil, nil, err
		}
		res = narrender.Result{Root: old.Root, NARSize: old.NARSize, NARSha256: old.NARSha256}
	}
	p, err := newPathInfo(ni, res)
	if err != nil {
		return nil, nil, err
	}
	if err := h.checkReferences(r.Context(), p); err != nil {
		return nil, nil, err
	}
	return p, up, nil
}

// checkNarInfoFields refuses a narinfo whose StorePath is not directly in
// the store directory or has a name Nix forbids, whose References or
// Deriver are not store path base names, or that has no URL; the error
// names the field.
func checkNarInfoFields(ni *narinfo.NarInfo) error {
	base, ok := strings.CutPrefix(ni.StorePath, store.StoreDir+"/")
	if !ok || strings.Contains(base, "/") {
		return fmt.Errorf("%w: narinfo: StorePath %q is not in %s", ErrInvalid, ni.StorePath, store.StoreDir)
	}
	if err := store.ValidateBaseName(base); err != nil {
		return fmt.Errorf("%w: narinfo: StorePath %q: %v", ErrInvalid, ni.StorePath, err)
	}
	for _, ref := range ni.References {
		if err := store.ValidateBaseName(ref); err != nil {
			return fmt.Errorf("%w: narinfo for %s: References: %q: %v", ErrInvalid, ni.StorePath, ref, err)
		}
	}
	if ni.Deriver != "" {
		if err := store.ValidateBaseName(ni.Deriver); err != nil {
			return fmt.Errorf("%w: narinfo for %s: Deriver %q: %v", ErrInvalid, ni.StorePath, ni.Deriver, err)
		}
	}
	if ni.URL == "" {
		return fmt.Errorf("%w: narinfo for %s has no URL", ErrInvalid, ni.StorePath)
	}
	return nil
}

// checkReferences refuses a PathInfo that refers to paths the cache does
// not hold (other than itself): `nix copy --to` uploads references first,
// so a missing one means a partial or forged upload, whose closure Nix
// could not substitute.
func (h *handler) checkReferences(ctx context.Context, p *store.PathInfo) error {
	for _, ref := range p.References {
		if ref == p.Path {
			continue
		}
		d, err := store.ParsePathDigest(ref[:32])
		if err != nil {
			return err
		}
		q, err := h.o.Index.Get(ctx, d)
		if errors.Is(err, store.ErrNotFound) || err == nil && q.Path != ref {
			return fmt.Errorf("%w: narinfo for %s: References: %s is not in this cache (upload references first)", ErrInvalid, p.AbsolutePath(), ref)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// narInfoURL returns a narinfo's URL in the form uploads are named by,
// relative to the cache and cleaned.
func narInfoURL(ni *narinfo.NarInfo) string {
	return path.Clean(strings.TrimPrefix(ni.URL, "/"))
}

// newPathInfo makes the PathInfo a narinfo describes for the NAR ingested
// as res, refusing a NAR whose hash or size differs from the narinfo's.
func newPathInfo(ni *narinfo.NarInfo, res narrender.Result) (*store.PathInfo, error) {
	narSum, err := sha256Of(ni.NarHash, "NarHash")
	if err != nil {
		return nil, err
	}
	if res.NARSha256 != narSum || res.NARSize != ni.NarSize {
		return nil, fmt.Errorf("%w: narinfo for %s says NarHash %s, NarSize %d; the NAR has sha256:%s, %d bytes",
			castore.ErrCorrupt, ni.StorePath, ni.NarHash, ni.NarSize, nixbase32.EncodeToString(res.NARSha256[:]), res.NARSize)
	}
	sp, err := storepath.FromAbsolutePath(ni.StorePath)
	if err != nil {
		return nil, fmt.Errorf("%w: narinfo: store path %q: %v", ErrInvalid, ni.StorePath, err)
	}
	p := &store.PathInfo{
		Path:       sp.String(),
		Root:       res.Root,
		References: slices.Compact(slices.Sorted(slices.Values(ni.References))),
		NARSize:    res.NARSize,
		NARSha256:  res.NARSha256,
		Signatures: ni.Signatures,
		Deriver:    ni.Deriver,
		CA:         ni.CA,
	}
	p.Root.Name = p.Path
	return p, nil
}

// checkFile compares the narinfo's FileHash and FileSize, when given, with
// the file that was put.
func checkFile(ni *narinfo.NarInfo, up *upload) error {
	if ni.FileSize != 0 && ni.FileSize != up.fileSize {
		return fmt.Errorf("%w: narinfo for %s says FileSize %d; the file at %s has %d bytes", castore.ErrCorrupt, ni.StorePath, ni.FileSize, up.url, up.fileSize)
	}
	if ni.FileHash != nil {
		sum, err := sha256Of(ni.FileHash, "FileHash")
		if err != nil {
			return err
		}
		if sum != up.fileHash {
			return fmt.Errorf("%w: narinfo for %s says FileHash %s; the file at %s has sha256:%s", castore.ErrCorrupt, ni.StorePath, ni.FileHash, up.url, nixbase32.EncodeToString(up.fileHash[:]))
		}
	}
	return nil
}

func sha256Of(h *nixhash.HashWithEncoding, field string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if h == nil || h.Algo() != nixhash.SHA256 {
		return sum, fmt.Errorf("%w: narinfo: %s is not a SHA-256", ErrInvalid, field)
	}
	copy(sum[:], h.Digest())
	return sum, nil
}

// pendingUploadStore is the power of an Index (store.Index has it) to keep
// pending uploads in the store, where every server on the same records
// finds them: the narinfo of a NAR may reach another replica.
type pendingUploadStore interface {
	PutPendingUpload(ctx context.Context, u store.PendingUpload) error
	PendingUpload(ctx context.Context, url string, sum [sha256.Size]byte) (store.PendingUpload, error)
	DeletePendingUpload(ctx context.Context, url string, sum [sha256.Size]byte) error
}

// uploads remembers ingested NARs until their narinfo arrives, by URL and
// by NAR hash: at most max of them, each for ttl. It is safe for concurrent
// use.
type uploads struct {
	max   int
	ttl   time.Duration
	mu    sync.Mutex
	byURL map[string]*upload
	byNAR map[[sha256.Size]byte]*upload
	queue []*upload // oldest first, including gone ones
	live  int
}

func newUploads(max int, ttl time.Duration) *uploads {
	return &uploads{max: max, ttl: ttl, byURL: map[string]*upload{}, byNAR: map[[sha256.Size]byte]*upload{}}
}

func (u *uploads) add(up *upload) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	up.expires = now.Add(u.ttl)
	if old := u.byURL[up.url]; old != nil {
		u.drop(old)
	}
	u.byURL[up.url] = up
	u.byNAR[up.nar.NARSha256] = up
	u.queue = append(u.queue, up)
	u.live++
	for len(u.queue) > 0 && (u.queue[0].gone || u.live > u.max || now.After(u.queue[0].expires)) {
		u.drop(u.queue[0])
		u.queue[0] = nil
		u.queue = u.queue[1:]
	}
	if len(u.queue) > 2*u.max {
		u.queue = slices.DeleteFunc(u.queue, func(up *upload) bool { return up.gone })
	}
}

// get returns the live upload put at url, else one of NAR hash sum, else
// nil.
func (u *uploads) get(url string, sum [sha256.Size]byte) *upload {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	for _, up := range []*upload{u.byURL[url], u.byNAR[sum]} {
		if up != nil && !up.gone && now.Before(up.expires) {
			return up
		}
	}
	return nil
}

// remove forgets up, if it is one of u's (an upload read back from the
// store is not).
func (u *uploads) remove(up *upload) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byURL[up.url] == up || u.byNAR[up.nar.NARSha256] == up {
		u.drop(up)
	}
}

// drop forgets up (it stays in the queue until it reaches the front).
func (u *uploads) drop(up *upload) {
	if up.gone {
		return
	}
	up.gone = true
	u.live--
	if u.byURL[up.url] == up {
		delete(u.byURL, up.url)
	}
	if u.byNAR[up.nar.NARSha256] == up {
		delete(u.byNAR, up.nar.NARSha256)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// drain reads and drops up to limit bytes of the request body.
func drain(r *http.Request, limit int64) {
	io.Copy(io.Discard, io.LimitReader(r.Body, limit))
}
