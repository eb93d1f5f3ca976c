//go:build !linux

package pebblestore

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// lockShared takes a shared lock on the existing lock file name, for a
// read-only store: it conflicts with the exclusive lock of a process that
// has the store open for writing, not with other readers.
func lockShared(name string) (io.Closer, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("castore: pebble: lock %s: %w", name, err)
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		f.Close()
		return nil, fmt.Errorf("castore: pebble: the store is open for writing by another process (lock %s: %w)", name, err)
	}
	return f, nil
}
