package main

import "syscall"

// setDeathSignal makes the kernel send CMD SIGKILL when dlock run dies
// (SIGKILL included): dlock's session, and with it the lock, is gone then.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
