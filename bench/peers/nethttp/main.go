// Command nethttp is the baseline of the benchmark: one process, plain
// net/http, GOMAXPROCS left at its default (all CPUs). It answers every
// request as examples/hello does:
//
//	Hello from worker=0 pid=<pid> gen=0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()

	// The handler and the server are those of examples/hello (whose handler
	// formats the body on every request, and lets net/http sniff the
	// Content-Type), with no timeouts as in the http.Server that forkline's
	// Run uses: the comparison is about the process layout only.
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", 0, os.Getpid(), 0)
	})
	srv := &http.Server{Addr: *addr, Handler: mux} //nolint:gosec // a loopback benchmark peer

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()

	select {
	case err := <-served:
		log.Fatal(err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
