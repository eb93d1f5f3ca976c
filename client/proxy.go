package client

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/wrap"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/store"
)

// ErrReadOnly is wrapped by the errors of writes to a RemoteStore or
// RemoteIndex (it is wrap.ErrReadOnly).
var ErrReadOnly = wrap.ErrReadOnly

// ProxyOptions configure a RemoteStore.
type ProxyOptions struct {
	// CacheSize bounds the uncompressed bytes of the chunks kept in the
	// client's cache; least recently used chunks are deleted beyond it.
	// 0 means no bound. A bound needs a cache that can delete chunks
	// (pebblestore.Store).
	CacheSize int64
	// Retries is how many times a call the upstream failed with a
	// transient error (unavailable, deadline exceeded, resource exhausted,
	// aborted) is tried again (default 5), after RetryDelay (default
	// 200 ms), doubling up to 5 s.
	Retries    int
	RetryDelay time.Duration
	// LookupTimeout bounds each narinfo look-up (RemoteIndex.Get), which
	// is tried once, not retried (default 1 s): an upstream that is down
	// or does not answer in time makes it fail at once with an error
	// wrapping store.ErrUnavailable, so that Nix can go on to its next
	// substituter.
	LookupTimeout time.Duration
	// Registerer receives the proxy's metrics; nil means none.
	Registerer prometheus.Registerer
}

// DefaultLookupTimeout is ProxyOptions.LookupTimeout when unset.
const DefaultLookupTimeout = time.Second

// chunkEvictor is what a bounded cache needs of the store under it.
type chunkEvictor interface {
	castore.ChunkDeleter
	castore.ChunkScanner
}

// RemoteStore is a read-only castore.Store over a nixcas server (the
// upstream), read through the client's local cache. It is a composition:
//
//	ReadOnly(ReadThrough(cache, Retrying(GRPCStore of the upstream)))
//
// (see package castore/wrap): reads are answered from the cache, and what
// it lacks is fetched from the upstream, retried while it fails with a
// transient error, verified and cached (chunks are checked against their
// digests, directories against theirs); writes fail with ErrReadOnly.
// What the composition does not do, RemoteStore adds: Prefetch fetches a
// whole tree in batches before it is read, checking blob chunk lists
// against the blob's digest before they are recorded; with a cache bound,
// least recently used chunks are evicted; the proxy's metrics count bytes
// from the upstream and from the cache. Safe for concurrent use.
type RemoteStore struct {
	castore.Store // the composition above
	c             *Client
	o             ProxyOptions
	retryOpts     wrap.RetryOptions
	lru           *chunkLRU // nil without a bound
	evict         chunkEvictor

	// complete holds the roots of trees prefetched whole since the last
	// eviction, with their distinct chunk bytes: a tree read again is not
	// fetched again.
	mu       sync.Mutex
	complete map[castore.Digest]uint64

	upstreamBytes prometheus.Counter
	hitBytes      prometheus.Counter
	cachedBytes   prometheus.Gauge
}

var _ castore.Store = (*RemoteStore)(nil)

// NewRemoteStore returns a RemoteStore reading through c's cache. With a
// cache bound, it scans the cache for its chunks (taken as least recently
// used in digest order) and evicts down to the bound. Closing the store
// closes neither c nor its cache.
func NewRemoteStore(ctx context.Context, c *Client, o ProxyOptions) (*RemoteStore, error) {
	if o.Retries == 0 {
		o.Retries = 5
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 200 * time.Millisecond
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	if o.CacheSize < 0 || o.Retries < 0 || o.LookupTimeout < 0 {
		return nil, fmt.Errorf("%w: client: proxy options: negative cache size, retries or lookup timeout", castore.ErrInvalid)
	}
	r := &RemoteStore{
		c:         c,
		o:         o,
		retryOpts: wrap.RetryOptions{Transient: Transient, Retries: o.Retries, Delay: o.RetryDelay, MaxDelay: 5 * time.Second},
		complete:  map[castore.Digest]uint64{},
		upstreamBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_proxy_upstream_bytes_total",
			Help: "Bytes received from the upstream server on the wire (compressed, with framing).",
		}),
		hitBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nixcas_proxy_cache_hit_bytes_total",
			Help: "Uncompressed bytes of the chunks of served trees found in the local cache (each chunk once per tree).",
		}),
		cachedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nixcas_proxy_cache_bytes",
			Help: "Uncompressed bytes of the chunks in the local cache (when bounded).",
		}),
	}
	if o.Registerer != nil {
		for _, m := range []prometheus.Collector{r.upstreamBytes, r.hitBytes, r.cachedBytes} {
			if err := o.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("client: proxy metrics: %w", err)
			}
		}
	}
	remote, err := wrap.Retrying(c.Remote().OnReceived(func(n uint64) { r.upstreamBytes.Add(float64(n)) }), r.retryOpts)
	if err != nil {
		return nil, err
	}
	r.Store = wrap.ReadOnly(wrap.ReadThrough(c.cache, remote))
	if o.CacheSize == 0 {
		return r, nil
	}
	ev, ok := castore.As[chunkEvictor](c.cache)
	if !ok {
		return nil, fmt.Errorf("%w: client: a bounded proxy cache needs a store that deletes chunks", castore.ErrInvalid)
	}
	r.evict, r.lru = ev, newChunkLRU()
	err = ev.ScanChunks(ctx, func(d castore.Digest, size int) error {
		r.lru.touch(d, size)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("client: proxy: scanning the cache: %w", err)
	}
	return r, r.trim(ctx, nil)
}

// PrefetchStats counts what Prefetch did.
type PrefetchStats struct {
	// BytesReceived counts the bytes received from the upstream on the
	// wire, for directories, chunk lists and chunks.
	BytesReceived uint64 `json:"bytesReceived"`
	// ChunksFetched and BytesFetched count the chunks received and their
	// uncompressed bytes.
	ChunksFetched uint64 `json:"chunksFetched"`
	BytesFetched  uint64 `json:"bytesFetched"`
	// ChunksFromCache and BytesFromCache count the tree's other chunks,
	// found in the cache (each distinct chunk once).
	ChunksFromCache uint64 `json:"chunksFromCache"`
	BytesFromCache  uint64 `json:"bytesFromCache"`
}

// Prefetch makes the cache hold the whole tree at root: its directories
// come from the upstream in one stream, the chunk lists the cache lacks
// in batches, and the chunks it lacks in batches, each verified before it
// is cached. Calls failing with a transient error
// are retried with backoff. A tree prefetched before, with no chunk
// evicted since, is not asked for again.
func (r *RemoteStore) Prefetch(ctx context.Context, root castore.Entry) (PrefetchStats, error) {
	var st PrefetchStats
	if root.Kind == castore.KindSymlink {
		return st, nil
	}
	r.mu.Lock()
	n, ok := r.complete[root.Digest]
	r.mu.Unlock()
	if ok {
		st.BytesFromCache = n
		r.hitBytes.Add(float64(n))
		return st, nil
	}
	var wire atomic.Uint64
	defer func() {
		st.BytesReceived = wire.Load()
		r.upstreamBytes.Add(float64(st.BytesReceived))
		r.hitBytes.Add(float64(st.BytesFromCache))
	}()
	wctx := countWire(ctx, nil, &wire)
	var t *tree
	err := r.retry(ctx, "getting directories", func() (err error) {
		t, err = r.c.remoteTree(wctx, root)
		return err
	})
	if err != nil {
		return st, err
	}
	if err := r.retry(ctx, "getting chunk lists", func() error { return r.c.chunkLists(wctx, t) }); err != nil {
		return st, err
	}
	// The chunk lists not in the cache, to verify before recording.
	var newLists []int
	for i, b := range t.blobs {
		if len(b.chunks) > 1 {
			if _, err := r.c.cache.GetBlobIndex(ctx, b.digest); errors.Is(err, castore.ErrNotFound) {
				newLists = append(newLists, i)
			} else if err != nil {
				return st, err
			}
		}
	}

	need, seen, err := r.c.missingChunks(ctx, t, func(ref castore.ChunkRef) {
		st.ChunksFromCache++
		st.BytesFromCache += uint64(ref.Size)
		r.touch(ref.Digest, int(ref.Size))
	})
	if err != nil {
		return st, err
	}
	for _, batch := range readBatches(need) {
		err := r.retry(ctx, "reading chunks", func() error {
			n, err := r.c.readChunks(ctx, batch, noProgress{})
			wire.Add(n)
			return err
		})
		if err != nil {
			return st, err
		}
		for _, ref := range batch {
			st.ChunksFetched++
			st.BytesFetched += uint64(ref.Size)
			r.touch(ref.Digest, int(ref.Size))
		}
	}
	for _, i := range newLists {
		if err := r.verifyBlob(ctx, t.blobs[i]); err != nil {
			return st, err
		}
	}
	if err := r.c.cacheTree(ctx, t); err != nil {
		return st, err
	}
	if err := r.trim(ctx, seen); err != nil {
		return st, err
	}
	r.mu.Lock()
	r.complete[root.Digest] = st.BytesFromCache + st.BytesFetched
	r.mu.Unlock()
	return st, nil
}

// verifyBlob checks that the chunks of b, read from the cache, hash to
// the blob's digest.
func (r *RemoteStore) verifyBlob(ctx context.Context, b blobItem) error {
	h := castore.NewHasher()
	var buf []byte
	for _, ref := range b.chunks {
		var err error
		if buf, err = r.c.cache.GetChunk(ctx, ref.Digest, buf[:0]); err != nil {
			return err
		}
		h.Write(buf)
	}
	var got castore.Digest
	h.Sum(got[:0])
	if got != b.digest {
		return fmt.Errorf("%w: client: the upstream's chunk list of blob %s makes a blob hashing to %s", castore.ErrCorrupt, b.digest, got)
	}
	return nil
}

// retry calls fn until it succeeds, fails with an error that is not
// transient, or has been tried 1+Retries times (wrap.Retry).
func (r *RemoteStore) retry(ctx context.Context, what string, fn func() error) error {
	return wrap.Retry(ctx, r.retryOpts, "client: proxy: "+what, fn)
}

// transient reports whether err is a gRPC failure worth retrying.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}

// touch marks a chunk as just used.
func (r *RemoteStore) touch(d castore.Digest, size int) {
	if r.lru != nil {
		r.lru.touch(d, size)
	}
}

// trim evicts least recently used chunks, except those in keep, until the
// cache is within its bound (or only kept chunks are left).
func (r *RemoteStore) trim(ctx context.Context, keep map[castore.Digest]bool) error {
	if r.lru == nil {
		return nil
	}
	victims := r.lru.evict(r.o.CacheSize, keep)
	if len(victims) > 0 {
		r.mu.Lock()
		clear(r.complete)
		r.mu.Unlock()
	}
	for _, d := range victims {
		if _, err := r.evict.DeleteChunk(ctx, d); err != nil {
			return fmt.Errorf("client: proxy: evicting chunk: %w", err)
		}
	}
	r.cachedBytes.Set(float64(r.lru.bytes()))
	return nil
}

// Unwrap returns the composition RemoteStore adds prefetching, eviction
// and metrics to, for castore.As.
func (r *RemoteStore) Unwrap() any { return r.Store }

// GetChunk implements castore.ChunkReader: from the cache, else fetched
// from the upstream, verified and cached.
func (r *RemoteStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := r.Store.GetChunk(ctx, d, dst)
	if err == nil {
		r.touch(d, len(out)-len(dst))
	}
	return out, err
}

// Close does nothing: the caller closes the client and its cache.
func (r *RemoteStore) Close() error { return nil }

// RemoteIndex reads PathInfos from the upstream (PathInfoService.Get),
// read-only. The upstream has no lookup by NAR hash, so the index
// remembers the NAR hashes of the PathInfos it served (Nix asks for a
// narinfo before its NAR); another NAR hash is looked up by the store
// path the NAR URL names (GetByNARHashOf), else found in the upstream's
// list of all paths (see listing). Looking up a NAR by its hash
// prefetches its tree into the cache.
type RemoteIndex struct {
	r *RemoteStore

	mu    sync.Mutex
	byNAR map[[sha256.Size]byte]*store.PathInfo
	order [][sha256.Size]byte // oldest first, for forgetting

	// listMu is held while the upstream's paths are listed, one listing
	// at a time; listed is the last listing, nil before the first.
	listMu sync.Mutex
	listed *pathListing
}

// pathListing is what a listing of the upstream's paths found: the store
// path of each NAR hash, sorted by NAR hash. A NAR hash neither
// remembered nor named with its store path is looked up in it while it is
// younger than listingFresh, and the upstream is listed again only after
// that: a client asking for NAR hashes the upstream does not have (by
// mistake or to load it) costs at most one listing of every path every
// listingFresh, not one a request. A path added upstream since the last
// listing is not found by its NAR hash alone until the next one (Nix asks
// for its narinfo first, which the index then remembers).
type pathListing struct {
	at      time.Time
	entries []narPath // sorted by nar
	full    bool      // false: the upstream had more than maxListed paths
}

// narPath is a listed store path and the SHA-256 of its NAR.
type narPath struct {
	nar  [sha256.Size]byte
	path store.PathDigest
}

// listingFresh is how long a listing of the upstream's paths answers for
// NAR hashes before the upstream is listed again.
var listingFresh = 10 * time.Minute

// maxListed bounds the paths a listing keeps (52 bytes each): a larger
// upstream's NARs past the first maxListed listed are found only by
// their narinfos or store paths.
const maxListed = 1 << 21

// maxRemembered bounds the NAR hashes a RemoteIndex remembers.
const maxRemembered = 1 << 14

// Index returns the read-only PathInfo index of the upstream.
func (r *RemoteStore) Index() *RemoteIndex {
	return &RemoteIndex{r: r, byNAR: map[[sha256.Size]byte]*store.PathInfo{}}
}

// Get returns the upstream's PathInfo of the store path whose hash is d.
// It asks once, within ProxyOptions.LookupTimeout; when the upstream
// cannot be reached or does not answer in time, the error wraps
// store.ErrUnavailable.
func (x *RemoteIndex) Get(ctx context.Context, d store.PathDigest) (*store.PathInfo, error) {
	var wire atomic.Uint64
	defer func() { x.r.upstreamBytes.Add(float64(wire.Load())) }()
	lctx, cancel := context.WithTimeout(ctx, x.r.o.LookupTimeout)
	defer cancel()
	p, err := x.r.c.GetPathInfo(countWire(lctx, nil, &wire), d)
	switch {
	case status.Code(err) == codes.NotFound:
		return nil, fmt.Errorf("%w: store path %s", store.ErrNotFound, d)
	case err != nil && ctx.Err() != nil:
		return nil, err // the request ended
	case err != nil && (transient(err) || lctx.Err() != nil):
		return nil, fmt.Errorf("%w: %v", store.ErrUnavailable, err)
	case err != nil:
		return nil, err
	}
	x.remember(p)
	return p, nil
}

func (x *RemoteIndex) remember(p *store.PathInfo) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.byNAR[p.NARSha256]; !ok {
		x.order = append(x.order, p.NARSha256)
	}
	x.byNAR[p.NARSha256] = p
	for len(x.order) > maxRemembered {
		delete(x.byNAR, x.order[0])
		x.order = x.order[1:]
	}
}

// GetByNARHash returns the PathInfo of a store path whose NAR has that
// SHA-256, with its tree prefetched into the cache.
func (x *RemoteIndex) GetByNARHash(ctx context.Context, h [sha256.Size]byte) (*store.PathInfo, error) {
	return x.byNARHash(ctx, h, func() (*store.PathInfo, error) { return x.listFor(ctx, h) })
}

// GetByNARHashOf implements httpcache.PathNARIndex: GetByNARHash, the
// path looked up by its store path hash d rather than searched for in
// the upstream's list when the NAR is not among the lookups remembered.
func (x *RemoteIndex) GetByNARHashOf(ctx context.Context, h [sha256.Size]byte, d store.PathDigest) (*store.PathInfo, error) {
	return x.byNARHash(ctx, h, func() (*store.PathInfo, error) {
		p, err := x.Get(ctx, d)
		if err == nil && p.NARSha256 != h {
			err = fmt.Errorf("%w: NAR %x of store path %s", store.ErrNotFound, h, d)
		}
		return p, err
	})
}

// byNARHash returns the PathInfo remembered for the NAR hash h, else the
// one find finds, with its tree prefetched into the cache.
func (x *RemoteIndex) byNARHash(ctx context.Context, h [sha256.Size]byte, find func() (*store.PathInfo, error)) (*store.PathInfo, error) {
	x.mu.Lock()
	p := x.byNAR[h]
	x.mu.Unlock()
	if p == nil {
		var err error
		if p, err = find(); err != nil {
			return nil, err
		}
	}
	if _, err := x.r.Prefetch(ctx, p.Root); err != nil {
		return nil, fmt.Errorf("client: proxy: fetching %s: %w", p.Path, err)
	}
	return p, nil
}

// listFor looks for the NAR hash h in the last listing of the
// upstream's paths, listing them first when that one is older than
// listingFresh (or there is none), and looks the path found up.
func (x *RemoteIndex) listFor(ctx context.Context, h [sha256.Size]byte) (*store.PathInfo, error) {
	l, err := x.listing(ctx)
	if err != nil {
		return nil, err
	}
	i, ok := slices.BinarySearchFunc(l.entries, h, func(e narPath, h [sha256.Size]byte) int { return bytes.Compare(e.nar[:], h[:]) })
	if !ok {
		of := ""
		if !l.full {
			of = ", the first it sent of more"
		}
		return nil, fmt.Errorf("%w: NAR hash %x (not among the %d paths the upstream listed %s ago%s)",
			store.ErrNotFound, h, len(l.entries), time.Since(l.at).Round(time.Second), of)
	}
	p, err := x.Get(ctx, l.entries[i].path)
	if err == nil && p.NARSha256 != h {
		err = fmt.Errorf("%w: NAR hash %x: store path %s has another NAR since it was listed", store.ErrNotFound, h, l.entries[i].path)
	}
	return p, err
}

// listing returns the last listing of the upstream's paths if it is
// younger than listingFresh, else a new one (requests that need one
// meanwhile wait for it).
func (x *RemoteIndex) listing(ctx context.Context) (*pathListing, error) {
	x.listMu.Lock()
	defer x.listMu.Unlock()
	if l := x.listed; l != nil && time.Since(l.at) < listingFresh {
		return l, nil
	}
	var wire atomic.Uint64
	defer func() { x.r.upstreamBytes.Add(float64(wire.Load())) }()
	l := &pathListing{at: time.Now(), full: true}
	err := x.r.retry(ctx, "listing paths", func() error {
		l.entries, l.full = l.entries[:0], true
		stream, err := x.r.c.paths.List(countWire(ctx, nil, &wire), &storepb.ListPathInfoRequest{})
		if err != nil {
			return err
		}
		for {
			pb, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			p, err := store.PathInfoFromProto(pb)
			if err != nil {
				return fmt.Errorf("client: path info from the upstream: %w", err)
			}
			if len(l.entries) == maxListed {
				l.full = false
				continue
			}
			l.entries = append(l.entries, narPath{nar: p.NARSha256, path: p.Digest()})
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(l.entries, func(a, b narPath) int { return bytes.Compare(a.nar[:], b.nar[:]) })
	x.listed = l
	return l, nil
}

// Put fails with ErrReadOnly.
func (x *RemoteIndex) Put(context.Context, *store.PathInfo) error {
	return fmt.Errorf("%w: put path info", ErrReadOnly)
}

// chunkLRU orders chunks by last use.
type chunkLRU struct {
	mu    sync.Mutex
	ll    *list.List // of lruEntry, most recent first
	byD   map[castore.Digest]*list.Element
	total int64
}

type lruEntry struct {
	d    castore.Digest
	size int
}

func newChunkLRU() *chunkLRU {
	return &chunkLRU{ll: list.New(), byD: map[castore.Digest]*list.Element{}}
}

func (l *chunkLRU) touch(d castore.Digest, size int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byD[d]; ok {
		l.ll.MoveToFront(e)
		return
	}
	l.byD[d] = l.ll.PushFront(lruEntry{d: d, size: size})
	l.total += int64(size)
}

// evict forgets least recently used chunks not in keep until the total is
// at most limit, returning them.
func (l *chunkLRU) evict(limit int64, keep map[castore.Digest]bool) []castore.Digest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []castore.Digest
	for e := l.ll.Back(); e != nil && l.total > limit; {
		prev := e.Prev()
		ent := e.Value.(lruEntry)
		if !keep[ent.d] {
			l.ll.Remove(e)
			delete(l.byD, ent.d)
			l.total -= int64(ent.size)
			out = append(out, ent.d)
		}
		e = prev
	}
	return out
}

func (l *chunkLRU) bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}
