package pebblestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked: the store's directory is open in another process (or already
// in this one). A Pebble database has one writer at a time, which holds the
// LOCK file in its directory for as long as it is open.
var ErrLocked = errors.New("castore: store in use")

// ownerFile, beside Pebble's LOCK, names the process that last opened the
// store: its pid on the first line, its command line on the second. It is
// written once the lock is held, so while the lock is held it names the
// holder (unless the holder is still between taking the lock and writing
// the file).
const ownerFile = "LOCK.owner"

// recordOwner writes this process into dir's owner file, replacing it
// atomically. It is best effort: a store whose owner is not recorded still
// works, only a second opener's error says less.
func recordOwner(dir string) {
	tmp, err := os.CreateTemp(dir, ownerFile+".tmp*")
	if err != nil {
		return
	}
	_, err = fmt.Fprintf(tmp, "%d\n%s\n", os.Getpid(), strings.Join(os.Args, " "))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, ownerFile))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}

// StoreOwner is the process recorded as holding a store's lock.
type StoreOwner struct {
	// PID is 0 when no owner is recorded.
	PID int
	// Command is the owner's command line, as it recorded it.
	Command string
}

// readOwner returns the owner recorded in dir, if it is still running.
func readOwner(dir string) (StoreOwner, bool) {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return StoreOwner{}, false
	}
	first, rest, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil || pid <= 0 {
		return StoreOwner{}, false
	}
	// Signal 0 checks that the process exists; EPERM means it does, as
	// another user's.
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return StoreOwner{}, false
	}
	return StoreOwner{PID: pid, Command: strings.TrimSuffix(rest, "\n")}, true
}

// isLockConflict reports whether err, from opening a Pebble database, says
// that another process holds the directory's lock (fcntl's EAGAIN or
// EACCES), or that this process has it open already.
func isLockConflict(err error) bool {
	// Failing to create the LOCK file (permissions, say) is not a
	// conflict, though it can be EACCES too.
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return false
	}
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

// lockedError returns the error to report when opening the store in dir
// failed with err because the store is open elsewhere, naming the process
// that holds it; nil when err is something else.
func lockedError(dir string, err error) error {
	if !isLockConflict(err) {
		return nil
	}
	owner, ok := readOwner(dir)
	switch {
	case ok && owner.PID == os.Getpid():
		return fmt.Errorf("%w: %s is already open in this process (pid %d)", ErrLocked, dir, owner.PID)
	case ok && owner.Command != "":
		return fmt.Errorf("%w: %s is open in process %d (%s); one process at a time can open a store", ErrLocked, dir, owner.PID, owner.Command)
	case ok:
		return fmt.Errorf("%w: %s is open in process %d; one process at a time can open a store", ErrLocked, dir, owner.PID)
	}
	return fmt.Errorf("%w: %s is open in another process (not recorded in %s); one process at a time can open a store", ErrLocked, dir, ownerFile)
}
