// Command fasthttpprefork is the fasthttp/prefork peer of the benchmark: the
// same hello server as examples/fasthttp, run by
// github.com/valyala/fasthttp/prefork with Reuseport on (each child opens its
// own SO_REUSEPORT socket, as forkline does).
//
// fasthttp/prefork has no worker-count setting: the master starts
// runtime.GOMAXPROCS(0) children, and each child then sets GOMAXPROCS(1) for
// itself. To get -workers children this program calls
// runtime.GOMAXPROCS(*workers) in the master before ListenAndServe (setting
// GOMAXPROCS=2 in the environment would do the same). It passes no worker
// index either, so the body says worker=0; the pid tells the workers apart:
//
//	Hello from worker=0 pid=<pid> gen=0
//
// fasthttp/prefork's master installs no signal handler: SIGTERM kills it
// without stopping its children. OnMasterDeath makes the children exit when
// that happens; the benchmark also signals the whole process group.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/prefork"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	workers := flag.Int("workers", 2, "number of child processes (sets the master's GOMAXPROCS)")
	flag.Parse()

	if !prefork.IsChild() {
		runtime.GOMAXPROCS(*workers)
	}

	body := fmt.Appendf(nil, "Hello from worker=0 pid=%d gen=0\n", os.Getpid())
	srv := &fasthttp.Server{
		Handler: func(rc *fasthttp.RequestCtx) {
			rc.SetContentType("text/plain; charset=utf-8")
			rc.SetBody(body)
		},
		// The same settings as examples/fasthttp, so that the two differ
		// only in who runs the processes.
		CloseOnShutdown: true,
	}
	p := prefork.New(srv)
	p.Reuseport = true
	p.Network = "tcp4"
	p.OnMasterDeath = func() { os.Exit(1) }
	if err := p.ListenAndServe(*addr); err != nil {
		log.Fatal(err)
	}
}
