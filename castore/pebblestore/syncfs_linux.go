package pebblestore

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFileSystem makes files under dir durable with one syncfs of the
// file system holding dir (new subdirectories included), falling back to
// syncing each file where syncfs fails.
func syncFileSystem(dir string, files []string) error {
	d, err := os.Open(dir)
	if err == nil {
		err = unix.Syncfs(int(d.Fd()))
		d.Close()
	}
	if err != nil {
		return syncFiles(files)
	}
	return nil
}
