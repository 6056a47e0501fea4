//go:build !unix

package prefork

import (
	"errors"
	"fmt"
	"runtime"
)

// Worker processes need descriptor passing (the listener and the channel
// are handed to each worker as descriptors 3 and 4), which os/exec does not
// do on this platform.
func unsupported() error {
	return fmt.Errorf("prefork: worker processes are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func runParent(Config, <-chan stopReq, <-chan reloadCall) error { return unsupported() }

func runWorker(Config, ServeFunc, <-chan stopReq) error { return unsupported() }
