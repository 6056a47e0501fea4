//go:build unix

package worker

import (
	"os"
	"runtime/debug"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// adoptDescriptors makes the two descriptors the parent handed over this
// process's own: the channel is kept from the program's children, and the
// crash pipe becomes where the runtime writes a panic or fatal error, as
// well as stderr, so that the parent can say why a worker died (a worker
// that panics at start returns that panic's first line from Run).
func adoptDescriptors() {
	unix.CloseOnExec(wire.FDChannel)
	var st unix.Stat_t
	if unix.Fstat(wire.FDCrash, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	f := os.NewFile(wire.FDCrash, "forkline-crash")
	debug.SetCrashOutput(f, debug.CrashOptions{}) // keeps a duplicate, close-on-exec
	f.Close()
}
