//go:build !unix

package control

import (
	"net"
	"os"
	"syscall"
)

func listen(string, os.FileMode) (*net.UnixListener, error) { return nil, errNoPeerCred }

func parseSignal(string) (syscall.Signal, error) { return 0, errNoPeerCred }
