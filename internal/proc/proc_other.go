//go:build !linux

package proc

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr does nothing outside Linux: the harness stops its children
// itself.
func setSysProcAttr(*exec.Cmd, syscall.Signal) {}
