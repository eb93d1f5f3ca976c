package pebblestore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"

	"github.com/nixcas/nixcas/castore"
)

// How the Pebble store deals with a full disk
//
// A write that Pebble cannot append to its write-ahead log panics the
// process, and a memtable flush that fails is retried at once, for ever,
// leaving an empty file behind each time. So the store never lets Pebble
// get that far:
//
//   - spaceGuard refuses a write (ErrNoSpace) once the file system's free
//     space is below the reserve: room to flush both memtables plus
//     Options.MinFreeBytes. Reads are never refused, and writes are
//     accepted again as soon as space is freed.
//   - storeFS, the file system Pebble is given, turns what still gets
//     through (another process filling the disk between two checks) into a
//     wait: a write that fails with ENOSPC is retried every
//     spaceRetryInterval until it succeeds. Writes to the write-ahead log
//     wait for as long as it takes (failing one would panic); writes to
//     other files give up once the store is closing, so that Close ends.
//   - storeFS makes preallocation a no-op: Pebble would reserve 110% of a
//     memtable (70 MiB by default) for every log file, whatever it holds.
//     With a read-only store it refuses every change to the directory.

// spaceRecheckInterval is the longest the guard trusts a free-space figure.
const spaceRecheckInterval = time.Second

// spaceRetryInterval is how often a write that met a full disk is retried.
const spaceRetryInterval = 250 * time.Millisecond

// spaceWaitOther bounds how long a write other than the write-ahead log's
// waits for space before it fails.
const spaceWaitOther = 5 * time.Second

// spaceGuard decides whether a write may go ahead. It reads the free space
// of the file system (statfs) at most once a second while there is plenty,
// and before every write once there is little. It is safe for concurrent
// use; a nil guard admits everything.
type spaceGuard struct {
	dir     string
	reserve uint64
	why     string // how the reserve is made up, for the error

	mu      sync.Mutex
	budget  int64 // bytes that may be admitted before the next statfs
	checked time.Time
}

// admit reports whether about n more bytes may be written: ErrNoSpace when
// the free space is below the reserve. Each byte counts twice: once in the
// write-ahead log now, once in a table or blob file when the memtable is
// flushed.
func (g *spaceGuard) admit(n int) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.budget -= 2 * int64(n)
	if g.budget > 0 && time.Since(g.checked) < spaceRecheckInterval {
		return nil
	}
	avail, err := g.available()
	if err != nil {
		return err
	}
	g.checked = time.Now()
	if avail < g.reserve {
		g.budget = 0
		return g.noSpace(avail)
	}
	// Check again well before the margin is used up.
	g.budget = int64((avail - g.reserve) / 4)
	return nil
}

// available is availableBytes of the guarded directory.
func (g *spaceGuard) available() (uint64, error) {
	avail, err := availableBytes(g.dir)
	if err != nil {
		return 0, fmt.Errorf("castore: pebble: free space of %s: %w", g.dir, err)
	}
	return avail, nil
}

func (g *spaceGuard) noSpace(avail uint64) error {
	return fmt.Errorf("%w: %s has %s free, the store keeps %s in reserve (%s)",
		castore.ErrNoSpace, g.dir, formatMiB(avail), formatMiB(g.reserve), g.why)
}

// Room reports whether n more bytes fit on the store's file system (its
// data directory's) above the free space the store keeps in reserve:
// ErrNoSpace, saying what is free, when they do not; nil when the store
// does not check. For writers beside the store, such as a proxy's spool.
func (s *Store) Room(n uint64) error {
	g := s.space
	if g == nil {
		return nil
	}
	avail, err := g.available()
	if err != nil {
		return err
	}
	if avail < g.reserve || avail-g.reserve < n {
		return fmt.Errorf("%w: %s has %s free, short of %s beyond the store's %s reserve (%s)",
			castore.ErrNoSpace, g.dir, formatMiB(avail), formatMiB(n), formatMiB(g.reserve), g.why)
	}
	return nil
}

// availableBytes returns the space an unprivileged process may still use
// on the file system holding dir.
func availableBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

func formatMiB(n uint64) string {
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// isNoSpace reports whether err says the disk (or the user's quota) is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// errReadOnlyFS is what a read-only store's file system answers to any
// change.
var errReadOnlyFS = errors.New("castore: pebble: store opened read-only")

// storeFS is the file system the Pebble store runs on (see the notes at
// the top of this file).
type storeFS struct {
	vfs.FS
	readOnly bool
	// closing is closed when the store starts closing: writes other than
	// the write-ahead log's stop waiting for space.
	closing chan struct{}
	logger  pebble.Logger

	waitMu  sync.Mutex
	waiting int // writes waiting for space now
}

func newStoreFS(readOnly bool, logger pebble.Logger) *storeFS {
	return &storeFS{FS: vfs.Default, readOnly: readOnly, closing: make(chan struct{}), logger: logger}
}

// Unwrap returns the file system underneath.
func (s *storeFS) Unwrap() vfs.FS { return s.FS }

func (s *storeFS) refuse(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: errReadOnlyFS}
}

func (s *storeFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &storeFile{File: f, fs: s, name: name, wal: strings.HasSuffix(name, ".log")}, nil
}

func (s *storeFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if s.readOnly {
		return nil, s.refuse("create", name)
	}
	f, err := s.FS.Create(name, c)
	return s.wrap(name, f, err)
}

func (s *storeFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	if s.readOnly {
		return nil, s.refuse("open for writing", name)
	}
	f, err := s.FS.OpenReadWrite(name, c, opts...)
	return s.wrap(name, f, err)
}

func (s *storeFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if s.readOnly {
		return nil, s.refuse("reuse", oldname)
	}
	f, err := s.FS.ReuseForWrite(oldname, newname, c)
	return s.wrap(newname, f, err)
}

func (s *storeFS) Link(oldname, newname string) error {
	if s.readOnly {
		return s.refuse("link", newname)
	}
	return s.FS.Link(oldname, newname)
}

func (s *storeFS) Remove(name string) error {
	if s.readOnly {
		return s.refuse("remove", name)
	}
	return s.FS.Remove(name)
}

func (s *storeFS) RemoveAll(name string) error {
	if s.readOnly {
		return s.refuse("remove", name)
	}
	return s.FS.RemoveAll(name)
}

func (s *storeFS) Rename(oldname, newname string) error {
	if s.readOnly {
		return s.refuse("rename", oldname)
	}
	return s.FS.Rename(oldname, newname)
}

func (s *storeFS) MkdirAll(dir string, perm fs.FileMode) error {
	if s.readOnly {
		return s.refuse("mkdir", dir)
	}
	return s.FS.MkdirAll(dir, perm)
}

// Lock takes Pebble's LOCK file: exclusively as Pebble does for a writable
// store, shared for a read-only one, so that read-only opens exclude a
// writer (which could delete files under them) but not each other.
func (s *storeFS) Lock(name string) (io.Closer, error) {
	if s.readOnly {
		return lockShared(name)
	}
	return s.FS.Lock(name)
}

// waitForSpace is called when a write to name met a full disk, since
// the write began meeting it. It waits spaceRetryInterval and reports
// whether to try again: always for the write-ahead log (Pebble panics on
// a failed log write); for other files (flushes and compactions, which
// Pebble retries itself) for at most spaceWaitOther, and not once the
// store is closing, so that no background write blocks an open or a
// close for ever.
func (s *storeFS) waitForSpace(name string, wal bool, first bool, since time.Time) bool {
	if !wal {
		if time.Since(since) >= spaceWaitOther {
			return false
		}
		select {
		case <-s.closing:
			return false
		default:
		}
	}
	if first {
		s.waitMu.Lock()
		s.waiting++
		if s.waiting == 1 {
			s.logger.Errorf("castore: pebble: disk full writing %s; waiting for free space", name)
		}
		s.waitMu.Unlock()
	}
	t := time.NewTimer(spaceRetryInterval)
	defer t.Stop()
	if wal {
		<-t.C
		return true
	}
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

// doneWaiting undoes the count of a write that waited for space.
func (s *storeFS) doneWaiting() {
	s.waitMu.Lock()
	s.waiting--
	s.waitMu.Unlock()
}

// storeFile is a file of a storeFS.
type storeFile struct {
	vfs.File
	fs   *storeFS
	name string
	wal  bool
}

// Preallocate does nothing: Pebble asks for 110% of a memtable ahead of
// every write-ahead log, which stays allocated however little is written.
func (f *storeFile) Preallocate(offset, length int64) error { return nil }

// Write writes p, waiting for space when the disk is full (see
// storeFS.waitForSpace).
func (f *storeFile) Write(p []byte) (int, error) {
	return f.writeWaiting(p, func(b []byte, _ int) (int, error) { return f.File.Write(b) })
}

// WriteAt is Write at an offset.
func (f *storeFile) WriteAt(p []byte, off int64) (int, error) {
	return f.writeWaiting(p, func(b []byte, done int) (int, error) { return f.File.WriteAt(b, off+int64(done)) })
}

// writeWaiting writes p with write (given what is left and how much is
// written already), retrying what is left while the disk is full and
// storeFS.waitForSpace says to.
func (f *storeFile) writeWaiting(p []byte, write func(b []byte, done int) (int, error)) (int, error) {
	written := 0
	var since time.Time
	for first := true; ; first = false {
		n, err := write(p[written:], written)
		written += n
		if err == nil || !isNoSpace(err) {
			if !first {
				f.fs.doneWaiting()
			}
			return written, err
		}
		if first {
			since = time.Now()
		}
		if !f.fs.waitForSpace(f.name, f.wal, first, since) {
			if !first {
				f.fs.doneWaiting()
			}
			return written, err
		}
	}
}

// deletingCleaner deletes obsolete files, write-ahead logs included.
// Pebble keeps obsolete logs for reuse (as many as memtables may be
// queued, 64 MiB or more each) unless the cleaner needs their contents.
// noRecycling, one level down, says it does (ArchiveCleaner's marker
// method); Clean and String come from DeleteCleaner, one level up, so
// files are deleted. A closed store then holds only the logs it still
// needs.
type deletingCleaner struct {
	pebble.DeleteCleaner
	noRecycling
}

type noRecycling struct{ pebble.ArchiveCleaner }

// diskUsage returns the space allocated to dir and everything under it, as
// du counts it: allocated blocks (st_blocks × 512), each inode once. Files
// removed while it runs (compactions do) are skipped.
func diskUsage(dir string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := make(map[inode]bool)
	var total int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			total += info.Size()
			return nil
		}
		k := inode{uint64(st.Dev), st.Ino}
		if !seen[k] {
			seen[k] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("castore: pebble: disk usage of %s: %w", dir, err)
	}
	return total, nil
}
