package objectcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore"
	"github.com/nixcas/nixcas/castore/lrudir"
	"github.com/nixcas/nixcas/castore/pebblestore"
)

// FillTimeout bounds one fetch of an object from the remote store. A
// fetch runs apart from the request that started it, so that a reader who
// gives up does not fail the others waiting for the same object.
var FillTimeout = 5 * time.Minute

// Cache is a read-through cache of a remote ObjectStore's objects in a
// local directory, at most a given number of bytes. Safe for concurrent
// use.
type Cache struct {
	remote pebblestore.ObjectStore
	files  *lrudir.Dir
	m      *metrics

	mu    sync.Mutex // guards fills; taken before files' own lock
	fills map[string]*fill
}

var _ pebblestore.ObjectStore = (*Cache)(nil)

// fill is a fetch in progress.
type fill struct {
	done    chan struct{} // closed once data or err is set
	data    []byte
	err     error
	dropped bool // deleted while fetched: not to be kept
}

// Open opens the cache in dir (created if need be) in front of remote,
// keeping at most max bytes of objects. It indexes the objects already
// there, removes temporary files a crash left, and evicts down to max.
func Open(dir string, max int64, remote pebblestore.ObjectStore) (*Cache, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: object cache %s: size limit %d", castore.ErrInvalid, dir, max)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("castore: object cache: %w", err)
	}
	c := &Cache{remote: remote, fills: make(map[string]*fill)}
	c.m = newMetrics(c)
	files, err := lrudir.Open(dir, max, cacheable, func(string) { c.m.evictions.Inc() })
	if err != nil {
		return nil, fmt.Errorf("castore: object cache: %w", err)
	}
	c.files = files
	return c, nil
}

// Unwrap returns the remote store.
func (c *Cache) Unwrap() pebblestore.ObjectStore { return c.remote }

// Used returns the bytes of objects cached.
func (c *Cache) Used() int64 { return c.files.Used() }

// cacheable reports whether name is a digest: 64 lower-case hex digits.
func cacheable(name string) bool {
	d, err := castore.ParseDigest(name)
	return err == nil && d.String() == name
}

// PutObject implements pebblestore.ObjectStore: the remote store's.
func (c *Cache) PutObject(ctx context.Context, name string, data []byte) error {
	return c.remote.PutObject(ctx, name, data)
}

// SyncObjects implements pebblestore.ObjectStore: the remote store's.
func (c *Cache) SyncObjects(ctx context.Context) error { return c.remote.SyncObjects(ctx) }

// ListObjects implements pebblestore.ObjectStore: the remote store's.
func (c *Cache) ListObjects(ctx context.Context, fn func(name string, size int64) error) error {
	return c.remote.ListObjects(ctx, fn)
}

// DeleteObject implements pebblestore.ObjectStore: deletes the object
// from the remote store, then the copy here (also when the remote delete
// failed: it would only be fetched again).
func (c *Cache) DeleteObject(ctx context.Context, name string) error {
	err := c.remote.DeleteObject(ctx, name)
	if cacheable(name) {
		c.mu.Lock()
		c.files.Remove(name)
		if f, ok := c.fills[name]; ok {
			f.dropped = true
		}
		c.mu.Unlock()
	}
	return err
}

// GetObject implements pebblestore.ObjectStore: from the copy here, else
// fetched whole from the remote store, checked and kept.
func (c *Cache) GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	if !cacheable(name) {
		return c.remote.GetObject(ctx, name, off, n, dst)
	}
	if off < 0 {
		return dst, fmt.Errorf("%w: object %s: offset %d", castore.ErrInvalid, name, off)
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	if out, ok, err := c.readCopy(name, off, n, dst); ok || err != nil {
		return out, err
	}
	data, err := c.fetch(ctx, name)
	if err != nil {
		return dst, err
	}
	if n < 0 {
		n = int64(len(data)) - off
		if n < 0 {
			return dst, fmt.Errorf("%w: object %s: offset %d beyond its %d bytes", castore.ErrInvalid, name, off, len(data))
		}
	}
	if off+n > int64(len(data)) {
		return dst, fmt.Errorf("%w: object %s: %d bytes at %d, want %d", castore.ErrCorrupt, name, max(int64(len(data))-off, 0), off, n)
	}
	return append(dst, data[off:off+n]...), nil
}

// readCopy reads from the copy here; ok is false when there is none (or
// it was damaged and is dropped).
func (c *Cache) readCopy(name string, off, n int64, dst []byte) (out []byte, ok bool, err error) {
	e, ok := c.files.Lookup(name)
	if !ok {
		return dst, false, nil
	}
	size := e.Size()
	f, err := os.Open(c.files.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		c.files.Drop(e)
		return dst, false, nil
	}
	if err != nil {
		return dst, false, fmt.Errorf("castore: object cache: %w", err)
	}
	defer f.Close()
	whole := off == 0 && (n < 0 || n == size)
	if n < 0 {
		n = size - off
		if n < 0 {
			return dst, false, fmt.Errorf("%w: object %s: offset %d beyond its %d bytes", castore.ErrInvalid, name, off, size)
		}
	}
	if off+n > size {
		return dst, false, fmt.Errorf("%w: object %s: %d bytes at %d, want %d", castore.ErrCorrupt, name, max(size-off, 0), off, n)
	}
	start := len(dst)
	dst = castore.Grow(dst, int(n))
	got, err := f.ReadAt(dst[start:], off)
	if err != nil && !(err == io.EOF && int64(got) == n) || whole && castore.Hash(dst[start:]).String() != name {
		// Cut short or changed behind our back: fetch it again.
		slog.Warn("castore: object cache: dropping a damaged copy", "object", name, "dir", c.files.Dir(), "read", got, "size", size, "err", err)
		c.files.Drop(e)
		return dst[:start], false, nil
	}
	c.m.hits.Inc()
	return dst, true, nil
}

// fetch returns the whole object, fetched from the remote store and
// checked against its name, at most one fetch per object at a time. The
// slice is shared: never modify it.
func (c *Cache) fetch(ctx context.Context, name string) ([]byte, error) {
	c.mu.Lock()
	f, ok := c.fills[name]
	if !ok {
		f = &fill{done: make(chan struct{})}
		c.fills[name] = f
		c.m.misses.Inc()
		go c.fill(ctx, name, f)
	} else {
		c.m.shared.Inc()
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.data, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fill fetches the object, checks it and keeps a copy, then wakes the
// readers waiting for it.
func (c *Cache) fill(ctx context.Context, name string, f *fill) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), FillTimeout)
	defer cancel()
	data, err := c.remote.GetObject(ctx, name, 0, -1, nil)
	if err == nil {
		if got := castore.Hash(data).String(); got != name {
			err = fmt.Errorf("%w: object %s fetched: its %d bytes hash to %s", castore.ErrCorrupt, name, len(data), got)
			data = nil
		}
	}
	if err != nil {
		c.m.fillErrors.Inc()
	}
	var tmp string
	if err == nil && int64(len(data)) <= c.files.Max() {
		tmp = c.writeTemp(name, data)
	}
	c.mu.Lock()
	if tmp != "" {
		if f.dropped {
			os.Remove(tmp)
		} else {
			c.files.Keep(name, tmp, int64(len(data)))
		}
	}
	f.data, f.err = data, err
	delete(c.fills, name)
	c.mu.Unlock()
	close(f.done)
}

// writeTemp writes data to a temporary file beside the object's place and
// returns its path, or "" when that failed (the object is then served but
// not kept).
func (c *Cache) writeTemp(name string, data []byte) string {
	t, err := c.files.CreateTemp(name)
	if err != nil {
		slog.Warn("castore: object cache: cannot keep an object", "object", name, "err", err)
		return ""
	}
	_, err = t.Write(data)
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(t.Name())
		slog.Warn("castore: object cache: cannot keep an object", "object", name, "err", err)
		return ""
	}
	return t.Name()
}
