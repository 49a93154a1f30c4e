package stack

import (
	"os/exec"
	"syscall"
)

// setParentDeath asks Linux to send SIGTERM to the service when the process
// that started it dies, so a killed demo leaves nothing running.
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
