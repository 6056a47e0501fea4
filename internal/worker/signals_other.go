//go:build !unix

package worker

import "syscall"

// No job control here: the signals below are never sent.
const (
	ttin = syscall.SIGHUP
	ttou = syscall.SIGHUP
)
