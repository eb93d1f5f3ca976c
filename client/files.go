package client

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// newFile is a file a pull is writing. It is written with bare system
// calls rather than as an *os.File: opening a file through package os
// tries to add it to the network poller, which costs a regular file four
// fcntl calls and a failing epoll_ctl, more calls than the rest of a
// small file's way (open, write, close).
type newFile struct {
	path string
	fd   int // -1 once closed
}

// createFile creates the file path, which must not exist, for writing,
// with mode 0o755 when executable, else 0o644, whatever the umask.
func createFile(path string, executable bool) (*newFile, error) {
	mode := fileMode(executable)
	fd, err := openRetrying(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, mode)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: path, Err: err}
	}
	f := &newFile{path: path, fd: fd}
	if umaskStrips(mode) {
		if err := fchmodRetrying(fd, mode); err != nil {
			f.close()
			os.Remove(path)
			return nil, &os.PathError{Op: "chmod", Path: path, Err: err}
		}
	}
	return f, nil
}

// createTemp creates a file of a new name in dir, as createFile does.
func createTemp(dir string, executable bool) (*newFile, error) {
	for range 10000 {
		path := filepath.Join(dir, ".nixcas-"+strconv.FormatUint(uint64(rand.Uint32()), 36))
		f, err := createFile(path, executable)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("no free temporary name in %s", dir)
}

// write writes all of p.
func (f *newFile) write(p []byte) error {
	for len(p) > 0 {
		n, err := syscall.Write(f.fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: f.path, Err: err}
		}
		p = p[n:]
	}
	return nil
}

// close closes f; closing it again does nothing.
func (f *newFile) close() error {
	if f.fd < 0 {
		return nil
	}
	err := syscall.Close(f.fd)
	f.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: f.path, Err: err}
	}
	return nil
}

func openRetrying(path string, flags int, mode uint32) (int, error) {
	for {
		fd, err := syscall.Open(path, flags, mode)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

func fchmodRetrying(fd int, mode uint32) error {
	for {
		if err := syscall.Fchmod(fd, mode); err != syscall.EINTR {
			return err
		}
	}
}

// fileMode is the mode of a file a pull writes: 0o755 when executable,
// else 0o644, as Nix's files are but writable by their owner.
func fileMode(executable bool) uint32 {
	if executable {
		return 0o755
	}
	return 0o644
}

// umaskStrips says whether the process's umask takes bits of mode away
// (then a created file needs its mode set).
func umaskStrips(mode uint32) bool {
	umaskOnce.Do(func() { umask = readUmask() })
	return umask&mode != 0
}

var (
	umaskOnce sync.Once
	umask     uint32
)

// readUmask returns the process's umask as Linux reports it in
// /proc/self/status, or 0o777 when it cannot be read (every file then
// has its mode set).
func readUmask() uint32 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o777
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o777
}
