package bench

import "time"

// ProcessCPU returns the CPU time (user and system) this process has used
// (0 where the platform does not say).
func ProcessCPU() time.Duration { return processCPU() }
