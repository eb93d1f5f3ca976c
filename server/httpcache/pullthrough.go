package httpcache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/store"
)

// PullThroughOptions configure a [PullThrough].
type PullThroughOptions struct {
	// CAS and Index are the local store that fetched paths are ingested
	// into and served from. Both required.
	CAS   castore.Store
	Index *store.Index
	// Upstream is the binary cache paths are fetched from. Required.
	Upstream Source
	// LookupTimeout bounds each narinfo request to the upstream (default
	// 1 s). A lookup the upstream fails or does not answer in time is an
	// error wrapping store.ErrUnavailable.
	LookupTimeout time.Duration
	// SpoolDir is where a NAR being fetched is kept for its first
	// readers (see OpenFetching): the system's temporary directory when
	// empty. The file is unlinked at once and gone with the fetch, or as
	// soon as its last reader leaves or a write to it fails.
	SpoolDir string
	// SpoolRoom, when set, says whether a NAR of n bytes may be spooled
	// (nil error), asked when its fetch starts: the store's free-space
	// check, say (pebblestore.Store.Room), with SpoolDir on its disk. A
	// NAR not spooled has its readers wait for the whole fetch.
	SpoolRoom func(n uint64) error
}

// DefaultLookupTimeout is PullThroughOptions.LookupTimeout when unset.
const DefaultLookupTimeout = time.Second

// PullThrough is a read-only [Index] over a local store in front of an
// upstream Nix binary cache (a pull-through cache): a path in the local
// index is answered from it; another is looked up in the upstream's
// narinfo (once, within LookupTimeout) and answered with the upstream's
// PathInfo and signatures, without its tree. Its NAR is fetched when it
// is asked for by NAR hash (Nix asks for the narinfo first): decompressed,
// checked against the narinfo and ingested into the local store, with
// the narinfo's signatures, as [Import] does for one path; from then on
// the path is served locally and the upstream is not asked again. One
// fetch per NAR at a time; concurrent requests for it wait for that one,
// or follow it as it comes (OpenFetching).
// Safe for concurrent use.
type PullThrough struct {
	o  PullThroughOptions
	im *importer

	mu      sync.Mutex
	pending map[[sha256.Size]byte]*narinfo.NarInfo // looked up, not fetched
	order   [][sha256.Size]byte                    // of pending, oldest first
	fetches map[[sha256.Size]byte]*fetch
}

// fetch is a NAR being fetched; done is closed when err is set. spool,
// when not nil, holds the NAR as it comes (see OpenFetching), size bytes.
type fetch struct {
	done  chan struct{}
	err   error
	spool *narSpool
	size  uint64
}

// maxPending bounds the narinfos a PullThrough remembers between a
// narinfo request and its NAR's.
const maxPending = 1 << 14

var (
	_ Index          = (*PullThrough)(nil)
	_ PathNARIndex   = (*PullThrough)(nil)
	_ accessRecorder = (*PullThrough)(nil)
)

// NewPullThrough returns a PullThrough over o.
func NewPullThrough(o PullThroughOptions) (*PullThrough, error) {
	if o.CAS == nil || o.Index == nil || o.Upstream == nil {
		return nil, fmt.Errorf("%w: pull-through options: CAS, Index and Upstream are required", ErrInvalid)
	}
	if o.LookupTimeout < 0 {
		return nil, fmt.Errorf("%w: pull-through options: negative lookup timeout %v", ErrInvalid, o.LookupTimeout)
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	return &PullThrough{
		o:       o,
		im:      &importer{o: ImportOptions{CAS: o.CAS, Index: o.Index, Source: o.Upstream}},
		pending: map[[sha256.Size]byte]*narinfo.NarInfo{},
		fetches: map[[sha256.Size]byte]*fetch{},
	}, nil
}

// Get returns the local PathInfo of the store path whose hash is d, else
// the upstream's (with a zero Root: its tree is not fetched yet).
func (x *PullThrough) Get(ctx context.Context, d store.PathDigest) (*store.PathInfo, error) {
	p, err := x.o.Index.Get(ctx, d)
	if !errors.Is(err, store.ErrNotFound) {
		return p, err
	}
	lctx, cancel := context.WithTimeout(ctx, x.o.LookupTimeout)
	defer cancel()
	ni, err := x.im.readNarInfo(lctx, d.String())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: store path %s (upstream: %v)", store.ErrNotFound, d, err)
	case err != nil && ctx.Err() != nil:
		return nil, err // the request ended
	case errors.Is(err, ErrInvalid):
		return nil, fmt.Errorf("upstream: %w", err)
	case err != nil:
		return nil, fmt.Errorf("%w: narinfo of %s: %v", store.ErrUnavailable, d, err)
	}
	if p, err = upstreamPathInfo(ni); err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	x.remember(p.NARSha256, ni)
	return p, nil
}

// upstreamPathInfo is the PathInfo a narinfo describes, without a tree.
func upstreamPathInfo(ni *narinfo.NarInfo) (*store.PathInfo, error) {
	sum, err := sha256Of(ni.NarHash, "NarHash")
	if err != nil {
		return nil, err
	}
	sp, err := storepath.FromAbsolutePath(ni.StorePath)
	if err != nil {
		return nil, fmt.Errorf("%w: narinfo: store path %q: %v", ErrInvalid, ni.StorePath, err)
	}
	return &store.PathInfo{
		Path:       sp.String(),
		References: slices.Compact(slices.Sorted(slices.Values(ni.References))),
		NARSize:    ni.NarSize,
		NARSha256:  sum,
		Signatures: ni.Signatures,
		Deriver:    ni.Deriver,
		CA:         ni.CA,
	}, nil
}

func (x *PullThrough) remember(h [sha256.Size]byte, ni *narinfo.NarInfo) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.pending[h]; !ok {
		x.order = append(x.order, h)
	}
	x.pending[h] = ni
	for len(x.order) > maxPending {
		delete(x.pending, x.order[0])
		x.order = x.order[1:]
	}
}

// GetByNARHash returns the local PathInfo of a store path whose NAR has
// that SHA-256, fetching and ingesting it first when it is one the
// upstream described to Get.
func (x *PullThrough) GetByNARHash(ctx context.Context, h [sha256.Size]byte) (*store.PathInfo, error) {
	p, err := x.o.Index.GetByNARHash(ctx, h)
	if !errors.Is(err, store.ErrNotFound) {
		return p, err
	}
	x.mu.Lock()
	ni := x.pending[h]
	f := x.fetches[h]
	if ni == nil && f == nil {
		x.mu.Unlock()
		// A fetch may have ended between the look above and the lock:
		// it indexes the path before it forgets it, so look again.
		return x.o.Index.GetByNARHash(ctx, h)
	}
	if f == nil {
		f, _ = x.startFetch(h, ni, nil)
	}
	x.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, fmt.Errorf("fetching NAR %x from the upstream: %w", h, f.err)
	}
	return x.o.Index.GetByNARHash(ctx, h)
}

// GetByNARHashOf implements PathNARIndex: GetByNARHash, having looked up
// the store path d again when the NAR is neither local nor remembered
// from a lookup (relearn).
func (x *PullThrough) GetByNARHashOf(ctx context.Context, h [sha256.Size]byte, d store.PathDigest) (*store.PathInfo, error) {
	if p, err := x.o.Index.GetByNARHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
		return p, err
	}
	if err := x.relearn(ctx, h, d); err != nil {
		return nil, err
	}
	return x.GetByNARHash(ctx, h)
}

// relearn makes sure the NAR h is known from a lookup remembered or a
// fetch in progress, looking its store path d up again upstream when it
// is neither (a restart, or more lookups since than it remembers); a path
// whose NAR is not h is store.ErrNotFound.
func (x *PullThrough) relearn(ctx context.Context, h [sha256.Size]byte, d store.PathDigest) error {
	x.mu.Lock()
	known := x.pending[h] != nil || x.fetches[h] != nil
	x.mu.Unlock()
	if known {
		return nil
	}
	p, err := x.Get(ctx, d)
	if err == nil && p.NARSha256 != h {
		err = fmt.Errorf("%w: NAR %x of store path %s", store.ErrNotFound, h, d)
	}
	return err
}

// startFetch starts fetching the NAR h that ni describes; called holding
// mu. With reader set (the context of the request that starts it), the
// NAR is spooled for the requests that follow it (OpenFetching), and first
// is that request's reader, opened before the fetch starts: a fetch that
// ended at once would otherwise have closed its spool before the request
// could open it, and the request would have fetched the NAR again. A
// spool that cannot be made leaves the fetch without one (first nil).
func (x *PullThrough) startFetch(h [sha256.Size]byte, ni *narinfo.NarInfo, reader context.Context) (f *fetch, first io.ReadCloser) {
	f = &fetch{done: make(chan struct{}), size: ni.NarSize}
	if reader != nil {
		if sp, err := newNARSpool(x.o.SpoolDir, ni.NarSize, x.o.SpoolRoom); err == nil {
			f.spool = sp
			first, _ = sp.open(reader)
		} else {
			slog.Warn("pull-through: cannot spool a NAR for its first reader; it waits for the whole fetch", "store_path", ni.StorePath, "err", err)
		}
	}
	x.fetches[h] = f
	go x.fetch(h, ni, f)
	return f, first
}

// OpenFetching returns a reader of the NAR of hash h while it is being
// fetched, and its size, starting the fetch if the upstream described its
// path and the NAR is not local (relearning it through the store path
// d, if not nil, as GetByNARHashOf does): the reader
// follows the fetch as the NAR is decompressed, so that the client gets
// bytes long before a large NAR is ingested whole, and ends with the
// fetch's error if it fails (the bytes are the upstream's, not yet
// checked: Nix checks the NAR hash of what it downloads). ok is false
// when there is nothing to follow: the NAR is local, unknown, or being
// fetched for a request that did not follow it (GetByNARHash: those
// fetches spool nothing) or whose spool was given up (every reader left,
// or it ran out of space); the caller then serves it as usual.
func (x *PullThrough) OpenFetching(ctx context.Context, h [sha256.Size]byte, d *store.PathDigest) (r io.ReadCloser, size uint64, ok bool, err error) {
	if _, err := x.o.Index.GetByNARHash(ctx, h); err == nil || !errors.Is(err, store.ErrNotFound) {
		return nil, 0, false, err
	}
	if d != nil {
		if err := x.relearn(ctx, h, *d); err != nil {
			return nil, 0, false, err
		}
	}
	x.mu.Lock()
	f := x.fetches[h]
	if ni := x.pending[h]; f == nil && ni != nil {
		f, r = x.startFetch(h, ni, ctx)
	}
	x.mu.Unlock()
	if r != nil {
		return r, f.size, true, nil
	}
	if f == nil || f.spool == nil {
		return nil, 0, false, nil
	}
	r, ok = f.spool.open(ctx)
	return r, f.size, ok, nil
}

// fetch imports the path ni describes, on its own context: a request
// that gives up does not stop a fetch others may be waiting for.
func (x *PullThrough) fetch(h [sha256.Size]byte, ni *narinfo.NarInfo, f *fetch) {
	var tee io.Writer
	if f.spool != nil {
		tee = f.spool
	}
	f.err = x.im.importPath(context.Background(), ni, tee)
	if f.spool != nil {
		f.spool.finish(f.err)
	}
	x.mu.Lock()
	delete(x.fetches, h)
	if f.err == nil {
		delete(x.pending, h)
	}
	x.mu.Unlock()
	close(f.done)
}

// RecordAccess notes a read of the store path whose hash is d in the
// local index (store.Index.RecordAccess: a path not local is skipped when
// the times are written), so that retention keeps what is read.
func (x *PullThrough) RecordAccess(d store.PathDigest) { x.o.Index.RecordAccess(d) }

// Put fails: the pull-through cache is read-only.
func (x *PullThrough) Put(context.Context, *store.PathInfo) error {
	return fmt.Errorf("%w: the pull-through cache is read-only", ErrInvalid)
}
