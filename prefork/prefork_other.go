//go:build !unix

package prefork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
)

// Worker processes need descriptor passing (the listener and the channel
// are handed to each worker as descriptors 3 and 4), which os/exec does not
// do on this platform.
func unsupported() error {
	return fmt.Errorf("prefork: worker processes are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (c *Cluster) runParent(Config) error { return unsupported() }

func (c *Cluster) runWorker(Config, ServeFunc) error { return unsupported() }

func countRequests(context.Context) func() { return nil }

// supervisor and workerSide never run here; Cluster's methods find neither.
type (
	supervisor struct{}
	workerSide struct{}
)

func (*supervisor) reload(context.Context) error                         { return unsupported() }
func (*supervisor) send(int, []byte, []syscall.Conn) error               { return unsupported() }
func (*supervisor) request(context.Context, int, []byte) ([]byte, error) { return nil, unsupported() }
func (*supervisor) snapshot() []WorkerInfo                               { return nil }
func (*supervisor) kill(int, os.Signal) error                            { return unsupported() }
func (*supervisor) disconnect(int) error                                 { return unsupported() }
func (*supervisor) setWorkers(int) error                                 { return unsupported() }
func (*workerSide) send(int, []byte, []syscall.Conn) error               { return unsupported() }
func (*workerSide) request(context.Context, int, []byte) ([]byte, error) { return nil, unsupported() }
