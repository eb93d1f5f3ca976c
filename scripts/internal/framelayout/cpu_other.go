//go:build !linux

package main

import "time"

var start = time.Now()

// threadCPU is wall time where the thread's CPU time is not read: the
// figures are then wall times.
func threadCPU() time.Duration { return time.Since(start) }
