package proc

import (
	"os/exec"
	"syscall"
)

// setSysProcAttr puts the child in its own process group, so a terminal's
// signals reach only the harness, which stops its children itself, and asks
// Linux to send sig to the child if the harness dies.
func setSysProcAttr(cmd *exec.Cmd, sig syscall.Signal) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sig, Setpgid: true}
}
