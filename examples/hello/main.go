// Command hello is forkline's smallest server: net/http in N worker
// processes, each accepting from its own SO_REUSEPORT socket.
//
//	go build -o hello ./examples/hello && ./hello -workers 2
//	curl http://127.0.0.1:8080/          # Hello from worker=1 pid=4242 gen=1
//	kill -HUP <parent pid>               # zero-downtime reload
//	kill -TTIN <parent pid>              # one worker more (-TTOU: one fewer)
//	kill -TERM <parent pid>              # graceful stop
//
// Flags show the knobs: -ready-timeout (how long a new worker, in a reload
// too, may take to serve), -heartbeat-timeout, -max-requests, -max-memory.
//
// Other tools (the tests, the benchmarks) read its answer line.
package main

import (
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/forkline/forkline/prefork"
)

func main() {
	var cfg prefork.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to serve on")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "how workers get their socket: auto, reuseport or inherit")
	flag.TextVar(&cfg.Steering, "steering", prefork.SteerAuto, "steer new connections to slots that accept (eBPF): auto, off or required")
	flag.DurationVar(&cfg.StopTimeout, "stop-timeout", prefork.DefaultStopTimeout, "how long a draining worker may take before it is killed")
	flag.DurationVar(&cfg.ReadyTimeout, "ready-timeout", prefork.DefaultReadyTimeout, "how long a new worker may take to become ready (at start, after a crash, in a reload)")
	flag.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 0, "replace a worker that does not answer the parent's probes for this long (0: off)")
	flag.IntVar(&cfg.MaxRequests, "max-requests", 0, "recycle a worker after this many requests (0: off)")
	flag.IntVar(&cfg.MaxRequestsJitter, "max-requests-jitter", 0, "add up to this many requests to each worker's -max-requests")
	flag.Int64Var(&cfg.MaxMemory, "max-memory", 0, "recycle a worker whose RSS exceeds this many bytes (0: off; Linux)")
	verbose := flag.Bool("v", false, "log every worker event")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	http.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(d) // a stand-in for real work, to watch a drain wait for it
		fmt.Fprintf(w, "Slow hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	if err := prefork.New(cfg).Run(http.DefaultServeMux); err != nil {
		log.Fatal(err)
	}
}
