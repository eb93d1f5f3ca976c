package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nixcas/nixcas/castore"
)

// ObjectStore keeps named immutable objects: frames of chunks (see
// frames.go). An object is written once, whole, and never modified; it is
// read by byte range and deleted once nothing refers to it. The local
// default is DirObjects; object storage such as S3 fits the same four
// calls.
type ObjectStore interface {
	// PutObject stores data under name. When it returns the object can be
	// read; it is durable once SyncObjects returns. Putting a name that
	// exists with the same bytes is not an error (names are digests of
	// the bytes).
	PutObject(ctx context.Context, name string, data []byte) error
	// SyncObjects makes every object put so far durable.
	SyncObjects(ctx context.Context) error
	// GetObject appends n bytes of the object from off to dst (the rest of
	// the object when n < 0) and returns the result. A missing object is
	// ErrNotFound.
	GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error)
	// DeleteObject removes the object; a missing one is not an error.
	DeleteObject(ctx context.Context, name string) error
	// ListObjects calls fn with the name and size of every object, in no
	// particular order, and stops at fn's first error.
	ListObjects(ctx context.Context, fn func(name string, size int64) error) error
}

// ObjectProber is an ObjectStore that can tell whether its backend
// answers (s3objects.Store); a directory on local disk need not.
type ObjectProber interface {
	ProbeObjects(ctx context.Context) error
}

// ProbeObjects asks the store's object backend whether it answers, when
// it can be asked (through wrappers with an Unwrap method, such as
// objectcache.Cache). It returns nil for frames on local disk.
func (s *Store) ProbeObjects(ctx context.Context) error {
	if p, ok := objectsAs[ObjectProber](s.objects); ok {
		return p.ProbeObjects(ctx)
	}
	return nil
}

// ObjectTimer is an ObjectStore that can tell when each object was last
// written (put), by its own clock: the modification time of a file,
// S3's Last-Modified. A collection on a shared database deletes by it
// the frames no record names that are old enough to be no other
// process's frame between its put and its registration (see
// GCOptions.StrayAge).
type ObjectTimer interface {
	// ListObjectTimes is ListObjects with the time each object was last
	// written. It only lists: it removes nothing (DirObjects'
	// ListObjects removes the temporary files of a crash, which on a
	// directory shared by several processes may be another's put in
	// progress).
	ListObjectTimes(ctx context.Context, fn func(name string, size int64, written time.Time) error) error
	// ObjectTime returns when the object was last written; a missing
	// object is ErrNotFound.
	ObjectTime(ctx context.Context, name string) (time.Time, error)
}

// objectsAs returns the T that o is or wraps, through Unwrap methods
// that return an ObjectStore (objectcache.Cache's).
func objectsAs[T any](o ObjectStore) (T, bool) {
	for {
		if t, ok := o.(T); ok {
			return t, true
		}
		u, ok := o.(interface{ Unwrap() ObjectStore })
		if !ok {
			var zero T
			return zero, false
		}
		o = u.Unwrap()
	}
}

// DirObjects is an ObjectStore of files in a directory, spread over 256
// subdirectories by the first two characters of the name. Names are
// lower-case hexadecimal digests. A put writes a temporary file and
// renames it into place, unsynced; SyncObjects then syncs the files put
// since the last sync and their directories, all of them in flight at
// once (on this project's VM disk one sync costs 20 to 40 ms, and syncs
// one after another would hold the packer back). It syncs those files
// only: a sync of the whole file system (syncfs) would also write back
// every other dirty page there, such as the files a pull is writing or
// the builds of the machine.
type DirObjects struct {
	dir   string
	space *spaceGuard // nil: writes are not checked

	mu     sync.Mutex
	dirty  []string   // files put since the last sync
	syncMu sync.Mutex // one sync at a time: a sync that returns covers every put before it
}

var (
	_ ObjectStore = (*DirObjects)(nil)
	_ ObjectTimer = (*DirObjects)(nil)
)

// NewDirObjects returns the object store in dir, which is created on the
// first put.
func NewDirObjects(dir string) *DirObjects { return &DirObjects{dir: dir} }

// CheckObjectName refuses names that are not plain lower-case hex of 3 to
// 128 characters, the names every ObjectStore takes: anything else could
// leave a directory or a key prefix.
func CheckObjectName(name string) error {
	if len(name) < 3 || len(name) > 128 {
		return fmt.Errorf("%w: object name %q", castore.ErrInvalid, name)
	}
	for _, c := range name {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: object name %q", castore.ErrInvalid, name)
		}
	}
	return nil
}

func (o *DirObjects) path(name string) string {
	return filepath.Join(o.dir, name[:2], name)
}

// PutObject implements ObjectStore: the bytes go to a temporary file,
// which is renamed into place.
func (o *DirObjects) PutObject(ctx context.Context, name string, data []byte) (err error) {
	if err := CheckObjectName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := o.space.admit(len(data)); err != nil {
		return err
	}
	p := o.path(name)
	sub := filepath.Dir(p)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return o.writeError("put "+name, err)
	}
	f, err := os.CreateTemp(sub, name+".tmp*")
	if err != nil {
		return o.writeError("put "+name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return o.writeError("put "+name, err)
	}
	if err = f.Close(); err != nil {
		return o.writeError("put "+name, err)
	}
	if err = os.Rename(f.Name(), p); err != nil {
		return o.writeError("put "+name, err)
	}
	o.mu.Lock()
	o.dirty = append(o.dirty, p)
	o.mu.Unlock()
	return nil
}

// SyncObjects implements ObjectStore.
func (o *DirObjects) SyncObjects(ctx context.Context) error {
	o.syncMu.Lock()
	defer o.syncMu.Unlock()
	o.mu.Lock()
	dirty := o.dirty
	o.dirty = nil
	o.mu.Unlock()
	if len(dirty) == 0 {
		return nil
	}
	if err := syncFiles(dirty); err != nil {
		o.mu.Lock()
		o.dirty = append(o.dirty, dirty...)
		o.mu.Unlock()
		return o.writeError("sync", err)
	}
	return nil
}

// writeError wraps a failed write, as ErrNoSpace when the disk is full.
func (o *DirObjects) writeError(what string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: objects %s: %s: %v", castore.ErrNoSpace, o.dir, what, err)
	}
	return fmt.Errorf("castore: objects %s: %s: %w", o.dir, what, err)
}

// syncFiles syncs each file and the directories holding them (a file's
// directory and the two above it, which may have gained it: frames/ab/
// and frames/ in the data directory): the files' syncs in flight
// together, then the directories'. A file deleted since it was put (its
// frame retired meanwhile) needs no sync.
func syncFiles(files []string) error {
	var g errgroup.Group
	g.SetLimit(maxSyncsInFlight)
	dirs := map[string]bool{}
	for _, p := range files {
		g.Go(func() error {
			if err := syncPath(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		})
		for d, i := filepath.Dir(p), 0; i < 3; d, i = filepath.Dir(d), i+1 {
			dirs[d] = true
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for d := range dirs {
		g.Go(func() error { return syncPath(d) })
	}
	return g.Wait()
}

// maxSyncsInFlight bounds the syncs (and threads blocked in them) of one
// SyncObjects.
const maxSyncsInFlight = 32

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// GetObject implements ObjectStore.
func (o *DirObjects) GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	if err := CheckObjectName(name); err != nil {
		return dst, err
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	f, err := os.Open(o.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return dst, fmt.Errorf("%w: object %s", castore.ErrNotFound, name)
	}
	if err != nil {
		return dst, fmt.Errorf("castore: objects: %w", err)
	}
	defer f.Close()
	if n < 0 {
		fi, err := f.Stat()
		if err != nil {
			return dst, fmt.Errorf("castore: objects: %w", err)
		}
		n = fi.Size() - off
		if n < 0 {
			return dst, fmt.Errorf("%w: object %s: offset %d beyond its %d bytes", castore.ErrInvalid, name, off, fi.Size())
		}
	}
	start := len(dst)
	dst = castore.Grow(dst, int(n))
	got, err := f.ReadAt(dst[start:], off)
	if err == io.EOF && int64(got) < n {
		return dst[:start], fmt.Errorf("%w: object %s: %d bytes at %d, want %d", castore.ErrCorrupt, name, got, off, n)
	}
	if err != nil && err != io.EOF {
		return dst[:start], fmt.Errorf("castore: objects: %w", err)
	}
	return dst, nil
}

// DeleteObject implements ObjectStore.
func (o *DirObjects) DeleteObject(ctx context.Context, name string) error {
	if err := CheckObjectName(name); err != nil {
		return err
	}
	err := os.Remove(o.path(name))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("castore: objects: %w", err)
	}
	return nil
}

// ListObjects implements ObjectStore. Temporary files a crash left behind
// are removed, not listed.
func (o *DirObjects) ListObjects(ctx context.Context, fn func(name string, size int64) error) error {
	return o.walk(ctx, true, func(name string, info fs.FileInfo) error {
		return fn(name, info.Size())
	})
}

// ListObjectTimes implements ObjectTimer: the files' modification times
// (a put renames a file written just before into place). Temporary files
// are neither listed nor removed.
func (o *DirObjects) ListObjectTimes(ctx context.Context, fn func(name string, size int64, written time.Time) error) error {
	return o.walk(ctx, false, func(name string, info fs.FileInfo) error {
		return fn(name, info.Size(), info.ModTime())
	})
}

// ObjectTime implements ObjectTimer.
func (o *DirObjects) ObjectTime(ctx context.Context, name string) (time.Time, error) {
	if err := CheckObjectName(name); err != nil {
		return time.Time{}, err
	}
	info, err := os.Stat(o.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, fmt.Errorf("%w: object %s", castore.ErrNotFound, name)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("castore: objects: %w", err)
	}
	return info.ModTime(), nil
}

// walk calls fn with every object's file, removing temporary files when
// removeTemp is set and skipping them otherwise.
func (o *DirObjects) walk(ctx context.Context, removeTemp bool, fn func(name string, info fs.FileInfo) error) error {
	subs, err := os.ReadDir(o.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("castore: objects: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(o.dir, sub.Name()))
		if err != nil {
			return fmt.Errorf("castore: objects: %w", err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			if strings.Contains(e.Name(), ".tmp") {
				if removeTemp {
					os.Remove(filepath.Join(o.dir, sub.Name(), e.Name()))
				}
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("castore: objects: %w", err)
			}
			if err := fn(e.Name(), info); err != nil {
				return err
			}
		}
	}
	return nil
}
