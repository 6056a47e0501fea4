package prefork

import "github.com/forkline/forkline/internal/supervisor"

// Hooks for the tests of package prefork_test.

// KeepGOMAXPROCS makes c's parent leave the process's GOMAXPROCS alone:
// tests run parents side by side in one process.
func KeepGOMAXPROCS(c *Cluster) { c.testKeepProcs = true }

// UseStarter makes c's parent start its workers with st.
func UseStarter(c *Cluster, st supervisor.Starter) { c.testStart = st }
