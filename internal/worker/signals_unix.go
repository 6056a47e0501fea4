//go:build unix

package worker

import "syscall"

const (
	ttin = syscall.SIGTTIN
	ttou = syscall.SIGTTOU
)
