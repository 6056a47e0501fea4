package supervisor

import (
	"os"
	"strconv"
	"strings"

	"github.com/forkline/forkline/internal/wire"
)

// What a worker's environment is made of: the parent's, less what belongs
// to the parent alone, plus the worker's identity.

// parentOnly are variables of the parent's that a worker must not see: its
// own forkline identity (a parent may itself have been started by a
// worker's code) and what a service manager gave the parent (the notify
// socket, socket activation, the watchdog), which a worker would answer or
// adopt in the parent's name.
var parentOnly = []string{"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "FDSTORE"}

// workerEnv is environ without the parent's own variables, and with
// GOMAXPROCS = procs when procs > 0 (the parent's choice, which the worker
// removes again before its code runs: see wire.EnvUnset).
func workerEnv(environ []string, procs int) []string {
	var env []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !contains(wire.EnvNames, name) && !contains(parentOnly, name) {
			env = append(env, kv)
		}
	}
	if procs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(procs), wire.EnvUnset+"=GOMAXPROCS")
	}
	return env
}

// identity is the worker's own part of its environment.
func identity(id, gen int) []string {
	return []string{
		wire.EnvWorker + "=" + strconv.Itoa(id),
		wire.EnvGeneration + "=" + strconv.Itoa(gen),
		wire.EnvParent + "=" + strconv.Itoa(os.Getpid()),
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
