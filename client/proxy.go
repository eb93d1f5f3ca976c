package client

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/proto/castorepb"
	"github.com/nixcas/nixcas/proto/nixcaspb"
	"github.com/nixcas/nixcas/proto/storepb"
	"github.com/nixcas/nixcas/store"
)

// ErrReadOnly is wrapped by the errors of writes to a RemoteStore or
// RemoteIndex.
var ErrReadOnly = errors.New("client: proxy: read-only")

// ProxyOptions configure a RemoteStore.
type ProxyOptions struct {
	// CacheSize bounds the uncompressed bytes of the chunks kept in the
	// client's cache; least recently used chunks are deleted beyond it.
	// 0 means no bound. A bound needs a cache that can delete chunks
	// (castore.PebbleStore).
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
	DeleteChunk(ctx context.Context, d castore.Digest) (bool, error)
	ScanChunks(ctx context.Context, fn func(d castore.Digest, size int) error) error
}

// RemoteStore is a read-only castore.Store over a nixcas server (the
// upstream), read through the client's local cache: reads are answered
// from the cache, and what it lacks is fetched from the upstream,
// verified and cached (chunks are checked against their digests,
// directories against theirs, blob chunk lists against the blob's digest
// before they are recorded). Prefetch fetches a whole tree in batches
// before it is read; single reads fetch one item. Writes fail with
// ErrReadOnly. Safe for concurrent use.
type RemoteStore struct {
	c     *Client
	o     ProxyOptions
	lru   *chunkLRU // nil without a bound
	evict chunkEvictor

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
		c:        c,
		o:        o,
		complete: map[castore.Digest]uint64{},
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
	if o.CacheSize == 0 {
		return r, nil
	}
	ev, ok := c.cache.(chunkEvictor)
	if !ok {
		return nil, fmt.Errorf("%w: client: a bounded proxy cache needs a store that deletes chunks", castore.ErrInvalid)
	}
	r.evict, r.lru = ev, newChunkLRU()
	err := ev.ScanChunks(ctx, func(d castore.Digest, size int) error {
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
// transient, or has been tried 1+Retries times.
func (r *RemoteStore) retry(ctx context.Context, what string, fn func() error) error {
	delay := r.o.RetryDelay
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		if attempt == r.o.Retries {
			return fmt.Errorf("client: proxy: %s: upstream failed %d times: %w", what, attempt+1, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("client: proxy: %s: %w (after %v)", what, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
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

// HasChunk implements castore.ChunkStore: whether the cache has it.
func (r *RemoteStore) HasChunk(ctx context.Context, d castore.Digest) (bool, error) {
	return r.c.cache.HasChunk(ctx, d)
}

// GetChunk implements castore.ChunkStore: from the cache, else fetched
// from the upstream, verified and cached.
func (r *RemoteStore) GetChunk(ctx context.Context, d castore.Digest, dst []byte) ([]byte, error) {
	out, err := r.c.cache.GetChunk(ctx, d, dst)
	if err == nil {
		r.touch(d, len(out)-len(dst))
		return out, nil
	}
	if !errors.Is(err, castore.ErrNotFound) {
		return out, err
	}
	var wire atomic.Uint64
	defer func() { r.upstreamBytes.Add(float64(wire.Load())) }()
	err = r.retry(ctx, "reading chunk "+d.String(), func() error {
		stream, err := r.c.sync.ReadChunks(countWire(ctx, nil, &wire), &nixcaspb.ReadChunksRequest{Digests: [][]byte{d[:]}, Decoded: r.c.opts.Compression != "none"}, r.c.chunkCallOptions()...)
		if err != nil {
			return err
		}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return fmt.Errorf("%w: client: the upstream did not send chunk %s", castore.ErrCorrupt, d)
			}
			if err != nil {
				return err
			}
			for _, ch := range msg.GetChunks() {
				if string(ch.GetDigest()) != string(d[:]) {
					return fmt.Errorf("%w: client: the upstream sent chunk %x for %s", castore.ErrCorrupt, ch.GetDigest(), d)
				}
				_, err := castore.PutEncoded(ctx, r.c.cache, d, ch.GetData())
				return err
			}
		}
	})
	if status.Code(err) == codes.NotFound {
		return dst, fmt.Errorf("%w: chunk %s (upstream: %v)", castore.ErrNotFound, d, err)
	}
	if err != nil {
		return dst, err
	}
	out, err = r.c.cache.GetChunk(ctx, d, dst)
	if err == nil {
		r.touch(d, len(out)-len(dst))
	}
	return out, err
}

// PutChunk fails with ErrReadOnly.
func (r *RemoteStore) PutChunk(context.Context, castore.Chunk) (bool, error) {
	return false, fmt.Errorf("%w: put chunk", ErrReadOnly)
}

// GetBlobIndex implements castore.BlobIndexStore: from the cache, else
// (unless the blob is a cached chunk, so has no index) from the upstream,
// not cached: only Prefetch, which verifies them, caches chunk lists.
func (r *RemoteStore) GetBlobIndex(ctx context.Context, d castore.Digest) ([]castore.ChunkRef, error) {
	refs, err := r.c.cache.GetBlobIndex(ctx, d)
	if !errors.Is(err, castore.ErrNotFound) {
		return refs, err
	}
	// A blob that is a cached chunk is a blob of one chunk, without index.
	if ok, herr := r.c.cache.HasChunk(ctx, d); herr != nil || ok {
		if herr != nil {
			return nil, herr
		}
		return nil, err
	}
	var wire atomic.Uint64
	defer func() { r.upstreamBytes.Add(float64(wire.Load())) }()
	var resp *nixcaspb.StatBlobsResponse
	err = r.retry(ctx, "getting chunk list", func() (err error) {
		resp, err = r.c.sync.StatBlobs(countWire(ctx, nil, &wire), &nixcaspb.StatBlobsRequest{Digests: [][]byte{d[:]}})
		return err
	})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: blob %s (upstream: %v)", castore.ErrNotFound, d, err)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.GetBlobs()) != 1 || string(resp.GetBlobs()[0].GetDigest()) != string(d[:]) {
		return nil, fmt.Errorf("%w: client: the upstream answered StatBlobs of %s with something else", castore.ErrCorrupt, d)
	}
	pb := resp.GetBlobs()[0]
	if len(pb.GetChunks()) == 0 {
		return nil, fmt.Errorf("%w: blob index %s (a blob of one chunk)", castore.ErrNotFound, d)
	}
	refs = make([]castore.ChunkRef, len(pb.GetChunks()))
	for i, ch := range pb.GetChunks() {
		cd, err := castore.DigestFromBytes(ch.GetDigest())
		if err != nil || ch.GetSize() > castore.MaxChunkSize {
			return nil, fmt.Errorf("%w: client: upstream chunk list of blob %s: entry %d", castore.ErrCorrupt, d, i)
		}
		refs[i] = castore.ChunkRef{Digest: cd, Size: ch.GetSize()}
	}
	return refs, nil
}

// PutBlob fails with ErrReadOnly.
func (r *RemoteStore) PutBlob(context.Context, castore.Digest, uint64, []castore.ChunkRef) error {
	return fmt.Errorf("%w: put blob", ErrReadOnly)
}

// GetDirectory implements castore.DirectoryStore: from the cache, else
// from the upstream, checked against d and cached.
func (r *RemoteStore) GetDirectory(ctx context.Context, d castore.Digest) (*castore.Directory, error) {
	dir, err := r.c.cache.GetDirectory(ctx, d)
	if !errors.Is(err, castore.ErrNotFound) {
		return dir, err
	}
	var wire atomic.Uint64
	defer func() { r.upstreamBytes.Add(float64(wire.Load())) }()
	err = r.retry(ctx, "getting directory "+d.String(), func() error {
		stream, err := r.c.dirs.Get(countWire(ctx, nil, &wire), &castorepb.GetDirectoryRequest{
			ByWhat: &castorepb.GetDirectoryRequest_Digest{Digest: d[:]},
		})
		if err != nil {
			return err
		}
		msg, err := stream.Recv()
		if err == io.EOF {
			return fmt.Errorf("%w: directory %s", castore.ErrNotFound, d)
		}
		if err != nil {
			return err
		}
		if dir, err = castore.DirectoryFromProto(msg); err != nil {
			return fmt.Errorf("client: directory from the upstream: %w", err)
		}
		if got := dir.Digest(); got != d {
			return fmt.Errorf("%w: client: the upstream sent directory %s for %s", castore.ErrCorrupt, got, d)
		}
		return nil
	})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w: directory %s (upstream: %v)", castore.ErrNotFound, d, err)
	}
	if err != nil {
		return nil, err
	}
	if _, err := r.c.cache.PutDirectory(ctx, dir); err != nil {
		return nil, err
	}
	return dir, nil
}

// PutDirectory fails with ErrReadOnly.
func (r *RemoteStore) PutDirectory(context.Context, *castore.Directory) (castore.Digest, error) {
	return castore.Digest{}, fmt.Errorf("%w: put directory", ErrReadOnly)
}

// Stats returns the cache's counters.
func (r *RemoteStore) Stats(ctx context.Context) (castore.Stats, error) { return r.c.cache.Stats(ctx) }

// Sync syncs the cache.
func (r *RemoteStore) Sync(ctx context.Context) error { return r.c.cache.Sync(ctx) }

// Close does nothing: the caller closes the client and its cache.
func (r *RemoteStore) Close() error { return nil }

// RemoteIndex reads PathInfos from the upstream (PathInfoService.Get),
// read-only. The upstream has no lookup by NAR hash, so the index
// remembers the NAR hashes of the PathInfos it served (Nix asks for a
// narinfo before its NAR); another NAR hash is looked for in the
// upstream's list of all paths. Looking up a NAR by its hash prefetches
// its tree into the cache.
type RemoteIndex struct {
	r *RemoteStore

	mu    sync.Mutex
	byNAR map[[sha256.Size]byte]*store.PathInfo
	order [][sha256.Size]byte // oldest first, for forgetting
}

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
	x.mu.Lock()
	p := x.byNAR[h]
	x.mu.Unlock()
	if p == nil {
		var err error
		if p, err = x.listFor(ctx, h); err != nil {
			return nil, err
		}
	}
	if _, err := x.r.Prefetch(ctx, p.Root); err != nil {
		return nil, fmt.Errorf("client: proxy: fetching %s: %w", p.Path, err)
	}
	return p, nil
}

// listFor looks for the NAR hash h in the upstream's list of paths.
func (x *RemoteIndex) listFor(ctx context.Context, h [sha256.Size]byte) (*store.PathInfo, error) {
	var wire atomic.Uint64
	defer func() { x.r.upstreamBytes.Add(float64(wire.Load())) }()
	var found *store.PathInfo
	err := x.r.retry(ctx, "listing paths", func() error {
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
			x.remember(p)
			if p.NARSha256 == h {
				found = p
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("%w: NAR hash %x", store.ErrNotFound, h)
	}
	return found, nil
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
