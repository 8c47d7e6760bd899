//go:build !unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// runSupported: dlock run needs process groups, which this system lacks.
const runSupported = false

func procAttr() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) error { return errors.New("no process groups") }

func groupAlive(int) bool { return false }

func exitStatus(ps *os.ProcessState) int { return ps.ExitCode() }
