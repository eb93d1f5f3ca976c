package lrudir

import (
	"container/list"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nixcas/nixcas/castore"
)

// Dir is a bounded directory of named files (see the package doc).
type Dir struct {
	dir string
	max int64
	// onEvict is called (under mu) with the name of each file removed to
	// stay within the limit.
	onEvict func(name string)

	mu      sync.Mutex
	used    int64
	entries map[string]*Entry
	lru     list.List // of *Entry, most recent at the front
}

// Entry is a file of a Dir, as Lookup found it.
type Entry struct {
	name string
	size int64
	elem *list.Element
}

// Name returns the file's name.
func (e *Entry) Name() string { return e.name }

// Size returns the file's size in bytes, as it was kept.
func (e *Entry) Size() int64 { return e.size }

// Open indexes the files under dir whose names valid accepts (others are
// left alone), removes the temporary files a crash left, and evicts down
// to max bytes. A missing dir is an empty one, created by the first
// CreateTemp. onEvict, if not nil, is called with the name of each file
// evicted to stay within the limit, with the Dir's mutex held.
func Open(dir string, max int64, valid func(name string) bool, onEvict func(name string)) (*Dir, error) {
	if max <= 0 {
		return nil, fmt.Errorf("%w: cache directory %s: size limit %d", castore.ErrInvalid, dir, max)
	}
	d := &Dir{dir: dir, max: max, onEvict: onEvict, entries: make(map[string]*Entry)}
	all, err := scan(dir, valid, true)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	for _, f := range all {
		e := &Entry{name: f.name, size: f.size}
		e.elem = d.lru.PushFront(e)
		d.entries[f.name] = e
		d.used += f.size
	}
	d.mu.Lock()
	d.evictLocked()
	d.mu.Unlock()
	return d, nil
}

// found is a file scan met.
type found struct {
	name  string
	size  int64
	mtime time.Time
}

// scan lists the files under dir whose names valid accepts; with
// removeTemp it removes the temporary files a crash left.
func scan(dir string, valid func(name string) bool, removeTemp bool) ([]found, error) {
	var all []found
	subs, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("castore: cache directory: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() || len(sub.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, sub.Name()))
		if err != nil {
			return nil, fmt.Errorf("castore: cache directory: %w", err)
		}
		for _, e := range ents {
			name := e.Name()
			if strings.Contains(name, ".tmp") {
				if removeTemp {
					os.Remove(filepath.Join(dir, sub.Name(), name))
				}
				continue
			}
			if !valid(name) || name[:2] != sub.Name() || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			all = append(all, found{name, info.Size(), info.ModTime()})
		}
	}
	return all, nil
}

// Count returns how many files under dir valid accepts and their bytes,
// as Open would index them, changing nothing: for a directory no Dir has
// open (a read-only look at a store).
func Count(dir string, valid func(name string) bool) (files int, bytes int64, err error) {
	all, err := scan(dir, valid, false)
	for _, f := range all {
		files++
		bytes += f.size
	}
	return files, bytes, err
}

// Dir returns the directory.
func (d *Dir) Dir() string { return d.dir }

// Max returns the limit in bytes.
func (d *Dir) Max() int64 { return d.max }

// Path returns where the file name lives.
func (d *Dir) Path(name string) string { return filepath.Join(d.dir, name[:2], name) }

// Used returns the bytes of the files indexed.
func (d *Dir) Used() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used
}

// Len returns the number of files indexed.
func (d *Dir) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.entries)
}

// Lookup returns the file name and marks it used, or false when there is
// none.
func (d *Dir) Lookup(name string) (*Entry, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.entries[name]
	if ok {
		d.lru.MoveToFront(e.elem)
	}
	return e, ok
}

// Has reports whether the file name is indexed, without marking it used.
func (d *Dir) Has(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.entries[name]
	return ok
}

// CreateTemp creates a temporary file beside name's place, for Keep. The
// caller closes it, and removes it if it does not call Keep.
func (d *Dir) CreateTemp(name string) (*os.File, error) {
	sub := filepath.Dir(d.Path(name))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return nil, fmt.Errorf("castore: cache directory: %w", err)
	}
	f, err := os.CreateTemp(sub, name+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("castore: cache directory: %w", err)
	}
	return f, nil
}

// Keep renames the closed temporary file tmp into name's place and
// indexes it as size bytes, then evicts down to the limit. It removes tmp
// and returns false when name is already there or the rename fails.
func (d *Dir) Keep(name, tmp string, size int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.entries[name]; ok {
		os.Remove(tmp)
		return false
	}
	if err := os.Rename(tmp, d.Path(name)); err != nil {
		os.Remove(tmp)
		slog.Warn("castore: cache directory: cannot keep a file", "file", name, "dir", d.dir, "err", err)
		return false
	}
	e := &Entry{name: name, size: size}
	e.elem = d.lru.PushFront(e)
	d.entries[name] = e
	d.used += size
	d.evictLocked()
	return true
}

// Remove forgets name and removes its file.
func (d *Dir) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.entries[name]; ok {
		d.removeLocked(e)
	}
}

// Drop forgets e and removes its file, unless a newer file of the same
// name replaced it meanwhile: for a file found damaged.
func (d *Dir) Drop(e *Entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries[e.name] == e {
		d.removeLocked(e)
	}
}

// evictLocked removes the least recently used files until the directory
// holds at most max bytes.
func (d *Dir) evictLocked() {
	for d.used > d.max {
		e := d.lru.Back().Value.(*Entry)
		d.removeLocked(e)
		if d.onEvict != nil {
			d.onEvict(e.name)
		}
	}
}

func (d *Dir) removeLocked(e *Entry) {
	d.lru.Remove(e.elem)
	delete(d.entries, e.name)
	d.used -= e.size
	if err := os.Remove(d.Path(e.name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Warn("castore: cache directory: cannot remove a file", "file", e.name, "dir", d.dir, "err", err)
	}
}
