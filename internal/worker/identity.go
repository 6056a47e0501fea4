package worker

import (
	"os"
	"strconv"
	"strings"

	"github.com/forkline/forkline/internal/wire"
)

// A worker's identity is read once, when the program starts, and the
// variables that carried it are removed, with those the parent set for
// the worker's runtime only (GOMAXPROCS): a program the worker starts
// (a forkline-based tool, say) must not take itself for a worker, nor
// inherit the parent's CPU split. Reading once also keeps ID and Gen off
// the environment's lock in a request path.
var self struct {
	id, gen, parent int
}

func init() {
	self.id, _ = strconv.Atoi(os.Getenv(wire.EnvWorker))
	if self.id <= 0 {
		self.id = 0
		return
	}
	self.gen, _ = strconv.Atoi(os.Getenv(wire.EnvGeneration))
	self.parent, _ = strconv.Atoi(os.Getenv(wire.EnvParent))
	for _, name := range strings.Split(os.Getenv(wire.EnvUnset), ",") {
		if name != "" {
			os.Unsetenv(name)
		}
	}
	for _, name := range wire.EnvNames {
		os.Unsetenv(name)
	}
	if self.parent == os.Getppid() {
		adoptDescriptors()
	}
}

// IsWorker reports whether this process was started as a forkline worker.
func IsWorker() bool { return self.id > 0 }

// ID is this worker's slot (0 in a parent).
func ID() int { return self.id }

// Gen is this worker's generation (0 in a parent).
func Gen() int { return self.gen }
