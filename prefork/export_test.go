package prefork

import "github.com/forkline/forkline/internal/supervisor"

// Hooks for the tests of package prefork_test.

// KeepGOMAXPROCS makes c's parent leave the process's GOMAXPROCS alone:
// tests run parents side by side in one process.
func KeepGOMAXPROCS(c *Cluster) { c.testKeepProcs = true }

// WorkerEnv adds env to the environment of every worker c's parent starts:
// parents run in the test process name their workers' helper program with
// it, where t.Setenv would keep them from running side by side.
func WorkerEnv(c *Cluster, env ...string) { c.testEnv = env }

// UseStarter makes c's parent start its workers with st.
func UseStarter(c *Cluster, st supervisor.Starter) { c.testStart = st }
