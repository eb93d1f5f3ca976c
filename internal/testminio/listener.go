package testminio

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// listensAlone checks that process pid holds the one TCP listener on the
// port of addr: then the server answering on addr is that process, and no
// other process shares the port (MinIO listens with SO_REUSEPORT, so two
// servers started at once on one port could both bind it). It returns an
// error wrapping errAddrTaken when another process listens on the port
// or pid does not. A server that found the port free before ours bound it
// and binds it after this check is not seen here; it sees ours in its own
// check and gives the port up. Linux only: it reads /proc.
func listensAlone(pid int, addr string) error {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return fmt.Errorf("port of %s: %w", addr, err)
	}
	listeners, err := tcpListeners(port)
	if err != nil {
		return err
	}
	owned, err := socketInodes(pid)
	if err != nil {
		return err
	}
	others := 0
	for _, inode := range listeners {
		if !owned[inode] {
			others++
		}
	}
	switch {
	case others > 0:
		return fmt.Errorf("%w: %d other listeners on port %d", errAddrTaken, others, port)
	case len(listeners) == 0:
		return fmt.Errorf("%w: MinIO (process %d) does not listen on port %d, yet a server answered there", errAddrTaken, pid, port)
	}
	return nil
}

// tcpListeners returns the socket inodes of the TCP listeners (IPv4 and
// IPv6, any address) on port, from /proc/net/tcp and /proc/net/tcp6.
func tcpListeners(port uint64) ([]string, error) {
	var inodes []string
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) && name == "/proc/net/tcp6" {
			continue // IPv6 turned off
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			// sl local_address rem_address st ... inode: the local
			// address is HEXIP:HEXPORT, st 0A is LISTEN.
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && p == port {
				inodes = append(inodes, fields[9])
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
	}
	return inodes, nil
}

// socketInodes returns the inodes of the sockets process pid has open.
func socketInodes(pid int) (map[string]bool, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	inodes := make(map[string]bool)
	for _, e := range entries {
		// A link reads socket:[INODE]; a descriptor closed meanwhile
		// fails and is skipped.
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	return inodes, nil
}
