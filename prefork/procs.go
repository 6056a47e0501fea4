package prefork

import (
	"runtime"
	"sync"
)

// availableCPUs is how many CPUs the cluster may use: the Go runtime's
// default GOMAXPROCS, which is the lower of the CPU affinity mask and the
// cgroup CPU limit, rounded up (runtime.NumCPU sees only the mask: in a pod
// limited to 2 CPUs on a 64-CPU node it says 64). With GOMAXPROCS set, by
// the environment or a call, the default is computed aside and the setting
// put back.
var availableCPUs = sync.OnceValue(defaultGOMAXPROCS)

func defaultGOMAXPROCS() int {
	set := runtime.GOMAXPROCS(0)
	runtime.SetDefaultGOMAXPROCS()
	n := runtime.GOMAXPROCS(0)
	if n != set {
		runtime.GOMAXPROCS(set)
	}
	return n
}
