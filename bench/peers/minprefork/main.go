// Command minprefork is the least a prefork server can do, the http
// suite's control for what forkline's request path costs: the parent binds
// -workers SO_REUSEPORT sockets on -addr (plain TCP, not Go's default
// Multipath TCP; Go's default backlog) and starts that many copies of
// itself, each serving net/http on its own socket, handed over as fd 3,
// with GOMAXPROCS=1. Each answers every request with
//
//	Hello from worker=<id> pid=<pid> gen=1
//
// formatted per request as examples/hello does. There is no supervision
// (a worker that dies is not replaced), no drain and no messages. SIGTERM
// or SIGINT to the parent stops it: it sends SIGTERM to its workers, waits
// for them, and exits.
//
// Usage: minprefork [-addr 127.0.0.1:8080] [-workers 2]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// workerEnv carries a worker's id (1, 2, ...) to the copy that serves.
const workerEnv = "MINPREFORK_WORKER"

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to serve on")
	workers := flag.Int("workers", 2, "worker processes")
	flag.Parse()
	if id := os.Getenv(workerEnv); id != "" {
		log.Fatal(serve(id))
	}
	if err := parent(*addr, *workers); err != nil {
		log.Fatal(err)
	}
}

// serve is a worker: net/http on the socket at fd 3.
func serve(id string) error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(id)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", n, os.Getpid(), 1)
	})
	// No timeouts, as in the http.Server that forkline's Run uses: the
	// comparison is about what sits around the handler.
	return (&http.Server{Handler: mux}).Serve(ln) //nolint:gosec // a loopback benchmark peer
}

// parent binds the sockets, starts the workers and waits for a signal.
func parent(addr string, workers int) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var cmds []*exec.Cmd
	exited := make(chan struct{}, workers)
	for id := 1; id <= workers; id++ {
		cmd, bound, err := start(addr, id)
		addr = bound // port 0: the first bind picks the port for all
		if err != nil {
			killAll(cmds)
			return err
		}
		cmds = append(cmds, cmd)
		go func() {
			_ = cmd.Wait()
			exited <- struct{}{}
		}()
	}
	left := workers
	for left > 0 {
		select {
		case <-stop:
			killAll(cmds)
			for ; left > 0; left-- {
				<-exited
			}
			return nil
		case <-exited:
			left-- // no supervision: a dead worker stays dead
		}
	}
	return fmt.Errorf("all %d workers exited", workers)
}

// start binds one socket and starts worker id on it; it returns the
// address bound.
func start(addr string, id int) (*exec.Cmd, string, error) {
	lc := net.ListenConfig{Control: reusePort}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, addr, err
	}
	addr = ln.Addr().String()
	f, err := ln.(*net.TCPListener).File() // a duplicate, for the child
	ln.Close()
	if err != nil {
		return nil, addr, err
	}
	defer f.Close() // the child has its own copy once started
	self, err := os.Executable()
	if err != nil {
		return nil, addr, err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(id), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{f} // fd 3
	// A worker outlives no parent: the kernel sends it SIGTERM then.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return cmd, addr, cmd.Start()
}

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func killAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
}
