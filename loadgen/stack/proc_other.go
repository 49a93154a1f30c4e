//go:build !linux

package stack

import "os/exec"

// setParentDeath does nothing outside Linux: Close stops the services.
func setParentDeath(*exec.Cmd) {}
