//go:build !linux

package pebblestore

// syncFileSystem makes files durable one by one.
func syncFileSystem(dir string, files []string) error { return syncFiles(files) }
