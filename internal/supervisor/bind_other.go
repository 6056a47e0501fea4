//go:build !unix

package supervisor

import (
	"errors"
	"fmt"
	"runtime"
)

// Worker processes need descriptor passing (sockets and the channel are
// handed to each worker as descriptors), which os/exec does not do here.
var errUnsupported = fmt.Errorf("prefork: worker processes are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func bind(string, string, bool) (int, string, error) { return -1, "", errUnsupported }

func probeFree(string, string) error { return errUnsupported }

func closeFD(int) {}

func residentBytes(int) (int64, error) { return 0, errUnsupported }

func monotonicUsec() string { return "MONOTONIC_USEC=0" } // no service manager here

func sockName(int) (string, string, error) { return "", "", errUnsupported }

func canJoin(string, string) bool { return false }
