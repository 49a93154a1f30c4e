//go:build !linux

package main

import "time"

// threadCPU reports that thread CPU time is not available here; the floor
// is then timed with the wall clock.
func threadCPU() (time.Duration, bool) { return 0, false }
