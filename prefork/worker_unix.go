//go:build unix

package prefork

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/forkline/forkline/internal/wire"
)

// Descriptors a worker is started with (os/exec ExtraFiles).
const (
	fdChannel  = 3 // the worker's end of the socketpair to the parent
	fdListener = 4 // the worker's slot socket
)

// parentGoneGrace bounds how long a worker whose parent died may take to
// finish what it is doing: no worker outlives its parent by more than ~1 s.
const parentGoneGrace = 500 * time.Millisecond

// Causes of a worker's drain, as context.Cause of the ServeFunc's context.
var (
	errDrain      = errors.New("prefork: drain requested")
	errParentGone = errors.New("prefork: parent process is gone")
)

func runWorker(cfg Config, fn ServeFunc, stop <-chan stopReq) error {
	conn, err := openChannel()
	if err != nil {
		// Started by hand with the worker variables set: say so in one
		// sentence and stop, rather than half-start.
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	log := cfg.Logger.With("worker", WorkerID(), "pid", os.Getpid(), "gen", Generation())
	if err := conn.Send(&wire.Frame{Type: wire.TypeHello, From: uint32(WorkerID())}); err != nil {
		conn.Close()
		return err
	}

	ln, err := inheritedListener()
	if err != nil {
		return reportFailure(conn, err)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var closing atomic.Bool // the worker is closing its own channel
	parentGone := func() {
		cancel(errParentGone)
		time.AfterFunc(parentGoneGrace, func() {
			log.Error("parent is gone and the drain is not done: exiting")
			os.Exit(1)
		})
	}

	// The channel reader: drain requests, liveness probes, and EOF when
	// the parent dies.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			f, err := conn.Recv()
			if err != nil {
				if !closing.Load() {
					log.Warn("channel to parent closed: parent is gone, draining", "err", err)
					parentGone()
				}
				return
			}
			for _, fd := range f.FDs {
				unix.Close(fd)
			}
			switch f.Type {
			case wire.TypeDrain:
				cancel(errDrain)
			case wire.TypePing:
				conn.Send(&wire.Frame{Type: wire.TypePong, From: uint32(WorkerID()), ID: f.ID})
			}
		}
	}()

	// Signals: the parent speaks for the cluster. A ^C at a terminal, or a
	// HUP/TTIN/TTOU sent to the process group, reaches every worker too:
	// workers ignore them and wait for the parent's word. SIGTERM (sent by
	// systemd to the whole cgroup, or by Linux when the parent dies) drains.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	sigDone := make(chan struct{})
	go func() {
		defer close(sigDone)
		select {
		case <-sigs:
			if unix.Getppid() != envInt(envParent) {
				parentGone()
			} else {
				cancel(errDrain)
			}
		case req := <-stop:
			if req.fast {
				os.Exit(1)
			}
			cancel(errDrain)
		case <-ctx.Done():
		}
	}()

	defer func() {
		signal.Stop(sigs)
		cancel(nil)
		<-sigDone
		closing.Store(true)
		conn.Close()
		<-readerDone
	}()

	// The worker is ready when its server first calls Accept: it is then
	// serving, not merely started (Node's "online" vs "listening").
	rl := &readyListener{TCPListener: ln, ready: func() {
		conn.Send(&wire.Frame{Type: wire.TypeReady, From: uint32(WorkerID()), Payload: []byte(ln.Addr().String())})
	}}
	err = fn(ctx, rl)
	ln.Close()
	if err != nil && ctx.Err() == nil {
		log.Error("worker failed", "err", err)
		conn.Send(&wire.Frame{Type: wire.TypeFailed, From: uint32(WorkerID()), Payload: []byte(err.Error())})
		return err
	}
	return nil
}

// reportFailure tells the parent why this worker cannot serve, and returns
// err.
func reportFailure(conn *wire.Conn, err error) error {
	conn.Send(&wire.Frame{Type: wire.TypeFailed, From: uint32(WorkerID()), Payload: []byte(err.Error())})
	conn.Close()
	return err
}

// openChannel returns the channel to the parent, after checking that there
// is one: the recorded parent is this process's parent, and descriptor 3 is
// a unix stream socket.
func openChannel() (*wire.Conn, error) {
	ppid := envInt(envParent)
	if ppid == 0 || unix.Getppid() != ppid {
		return nil, ErrNoParent
	}
	typ, err := unix.GetsockoptInt(fdChannel, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return nil, ErrNoParent
	}
	if sa, err := unix.Getsockname(fdChannel); err != nil {
		return nil, ErrNoParent
	} else if _, ok := sa.(*unix.SockaddrUnix); !ok {
		return nil, ErrNoParent
	}
	unix.CloseOnExec(fdChannel)
	return wire.NewConn(os.NewFile(fdChannel, "forkline-channel"), wire.Options{})
}

// inheritedListener returns the slot socket the parent handed over.
func inheritedListener() (*net.TCPListener, error) {
	unix.CloseOnExec(fdListener)
	f := os.NewFile(fdListener, "forkline-listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("prefork: worker listener: %w", err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("prefork: worker listener is a %T, not TCP", ln)
	}
	return tl, nil
}

// readyListener is the worker's *net.TCPListener, which says the worker is
// ready on the first call to Accept or AcceptTCP. Every other method is the
// TCPListener's own.
type readyListener struct {
	*net.TCPListener
	once  sync.Once
	ready func()
}

func (l *readyListener) Accept() (net.Conn, error) {
	l.once.Do(l.ready)
	return l.TCPListener.Accept()
}

func (l *readyListener) AcceptTCP() (*net.TCPConn, error) {
	l.once.Do(l.ready)
	return l.TCPListener.AcceptTCP()
}
