//go:build !unix

package worker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/forkline/forkline/internal/wire"
)

var errUnsupported = fmt.Errorf("prefork: workers are not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func openChannel(int) (*wire.Conn, wire.Frame, error) { return nil, wire.Frame{}, errUnsupported }

func listenerOf(int, wire.Listener) (rawListener, error) { return nil, errUnsupported }

func packetOf(int, wire.Listener) (*net.UDPConn, error) { return nil, errUnsupported }

func answerBeats(int) func() { return func() {} }

func acceptQueued(rawListener) (net.Conn, error) { return nil, net.ErrClosed }

func takeQueue(rawListener) []net.Conn { return nil }

func ensureListening(rawListener) error { return nil }

func parentPID() int { return os.Getppid() }
