package castore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ObjectStore keeps named immutable objects: frames of chunks (see
// frames.go). An object is written once, whole, and never modified; it is
// read by byte range and deleted once nothing refers to it. The local
// default is DirObjects; object storage such as S3 fits the same four
// calls.
type ObjectStore interface {
	// PutObject stores data under name. When it returns the object is
	// durable. Putting a name that exists with the same bytes is not an
	// error (names are digests of the bytes).
	PutObject(ctx context.Context, name string, data []byte) error
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

// DirObjects is an ObjectStore of files in a directory, spread over 256
// subdirectories by the first two characters of the name. Names are
// lower-case hexadecimal digests.
type DirObjects struct {
	dir   string
	space *spaceGuard // nil: writes are not checked
}

var _ ObjectStore = (*DirObjects)(nil)

// NewDirObjects returns the object store in dir, which is created on the
// first put.
func NewDirObjects(dir string) *DirObjects { return &DirObjects{dir: dir} }

// checkObjectName refuses names that are not plain lower-case hex of at
// least three characters: anything else could leave the directory.
func checkObjectName(name string) error {
	if len(name) < 3 || len(name) > 128 {
		return fmt.Errorf("%w: object name %q", ErrInvalid, name)
	}
	for _, c := range name {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: object name %q", ErrInvalid, name)
		}
	}
	return nil
}

func (o *DirObjects) path(name string) string {
	return filepath.Join(o.dir, name[:2], name)
}

// PutObject implements ObjectStore: the bytes go to a temporary file,
// which is synced and renamed into place, and the directory is synced.
func (o *DirObjects) PutObject(ctx context.Context, name string, data []byte) (err error) {
	if err := checkObjectName(name); err != nil {
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
	if err = f.Sync(); err != nil {
		return o.writeError("put "+name, err)
	}
	if err = f.Close(); err != nil {
		return o.writeError("put "+name, err)
	}
	if err = os.Rename(f.Name(), p); err != nil {
		return o.writeError("put "+name, err)
	}
	return syncDir(sub)
}

// writeError wraps a failed write, as ErrNoSpace when the disk is full.
func (o *DirObjects) writeError(what string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: objects %s: %s: %v", ErrNoSpace, o.dir, what, err)
	}
	return fmt.Errorf("castore: objects %s: %s: %w", o.dir, what, err)
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("castore: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("castore: sync %s: %w", dir, err)
	}
	return nil
}

// GetObject implements ObjectStore.
func (o *DirObjects) GetObject(ctx context.Context, name string, off, n int64, dst []byte) ([]byte, error) {
	if err := checkObjectName(name); err != nil {
		return dst, err
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	f, err := os.Open(o.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return dst, fmt.Errorf("%w: object %s", ErrNotFound, name)
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
			return dst, fmt.Errorf("%w: object %s: offset %d beyond its %d bytes", ErrInvalid, name, off, fi.Size())
		}
	}
	start := len(dst)
	dst = grow(dst, int(n))
	got, err := f.ReadAt(dst[start:], off)
	if err == io.EOF && int64(got) < n {
		return dst[:start], fmt.Errorf("%w: object %s: %d bytes at %d, want %d", ErrCorrupt, name, got, off, n)
	}
	if err != nil && err != io.EOF {
		return dst[:start], fmt.Errorf("castore: objects: %w", err)
	}
	return dst, nil
}

// DeleteObject implements ObjectStore.
func (o *DirObjects) DeleteObject(ctx context.Context, name string) error {
	if err := checkObjectName(name); err != nil {
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
				os.Remove(filepath.Join(o.dir, sub.Name(), e.Name()))
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("castore: objects: %w", err)
			}
			if err := fn(e.Name(), info.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}
