//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// runSupported: dlock run needs process groups.
const runSupported = true

// procAttr returns the attributes CMD starts with: a process group of its
// own, whose id is CMD's pid (and on Linux, SIGKILL when dlock dies).
func procAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(a)
	return a
}

// signalGroup sends s to every process of the process group pgid.
func signalGroup(pgid int, s syscall.Signal) error {
	return syscall.Kill(-pgid, s)
}

// groupAlive reports whether a process of the group pgid is left.
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// exitStatus returns the exit status of a finished process: its exit
// code, or 128+N when signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignal + int(ws.Signal())
	}
	return ps.ExitCode()
}
