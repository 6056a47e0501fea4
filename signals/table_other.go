//go:build !unix

package signals

import (
	"os"
	"syscall"
)

// Only the two signals Go delivers everywhere; on Windows, os.Interrupt is
// Ctrl-C or Ctrl-Break and SIGTERM a console close, logoff or shutdown.
var table = [...]entry{
	{"INT", os.Interrupt, Stop},
	{"TERM", syscall.SIGTERM, Stop},
}
