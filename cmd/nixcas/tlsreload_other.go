//go:build !linux

package main

import "os"

// inodeOf returns 0: elsewhere a change shows in the size or time.
func inodeOf(os.FileInfo) uint64 { return 0 }
