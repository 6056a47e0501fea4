// Command metrics is examples/hello with Prometheus metrics: the parent
// serves the whole cluster's (package metrics) at /metrics on an address of
// its own, out of the request path.
//
//	go build -o hello-metrics . && ./hello-metrics -workers 2 -metrics-addr 127.0.0.1:8081
//	curl http://127.0.0.1:8080/          # Hello from worker=1 pid=4242 gen=1
//	curl http://127.0.0.1:8081/metrics   # forkline_workers{state="listening"} 2 ...
//
// The metrics are served by the parent, not the workers: only the parent
// sees every worker (a worker's scrape would report itself alone), and it
// stays up through crashes and reloads, so a scrape never lands on a
// worker that is going away. The parent binds the metrics address before
// it starts the cluster (a port in use fails at once), serves it for as
// long as the cluster runs, and shuts it down when the cluster has
// stopped. The listener is close-on-exec, as every descriptor Go opens:
// the workers, started from the same binary, neither inherit nor bind it.
//
// It is a module of its own, as package metrics is, so that forkline's
// core module does not depend on the Prometheus client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/oklog/run"

	"github.com/forkline/forkline/metrics"
	"github.com/forkline/forkline/prefork"
)

func main() {
	var cfg prefork.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to serve on")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.DurationVar(&cfg.StopTimeout, "stop-timeout", prefork.DefaultStopTimeout, "how long a draining worker may take before it is killed")
	metricsAddr := flag.String("metrics-addr", "127.0.0.1:8081", "serve the cluster's Prometheus metrics at /metrics on this address, from the parent (empty: off)")
	verbose := flag.Bool("v", false, "log every worker event")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	c := prefork.New(cfg)
	var err error
	if *metricsAddr == "" || prefork.IsWorker() {
		err = c.Run(mux)
	} else {
		err = runWithMetrics(c, mux, *metricsAddr, cfg.Logger)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// runWithMetrics runs the cluster in the parent with the metrics server
// beside it, as two actors of one run.Group: when either ends, the other
// is stopped, and runWithMetrics returns when both have. A metrics server
// that fails stops the cluster rather than leave it running unobserved.
func runWithMetrics(c *prefork.Cluster, h http.Handler, addr string, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(c))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: prefork.DefaultReadHeaderTimeout}
	logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")

	var g run.Group
	g.Add(func() error { return c.Run(h) }, func(error) {
		c.Shutdown(context.Background()) // bounded by Config.StopTimeout
	})
	g.Add(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics server: %w", err)
		}
		return nil
	}, func(error) {
		// A scrape in flight gets a moment to finish; one that takes
		// longer is cut (a snapshot takes a second at most).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return g.Run()
}
