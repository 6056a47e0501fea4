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
// too, may take to serve), -heartbeat-timeout, -max-requests, -max-memory,
// -steering; -tls-addr with -cert and -key serves the same handler over
// HTTPS, with HTTP/2, on a second address:
//
//	./hello -workers 2 -tls-addr 127.0.0.1:8443 -cert cert.pem -key key.pem
//	curl -k --http2 https://127.0.0.1:8443/
//
// Other tools (the tests, the benchmarks) read its answer line.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
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
	flag.StringVar(&cfg.User, "user", "", "run every worker as this user, a name or uid (the parent keeps root: -addr :80 works)")
	flag.StringVar(&cfg.Group, "group", "", "the workers' group, a name or gid (default: the -user's primary group)")
	flag.StringVar(&cfg.ControlSocket, "control", "", "serve the control socket at this path, for the forkline command (default: $RUNTIME_DIRECTORY/forkline.sock under systemd; \"off\": none)")
	tlsAddr := flag.String("tls-addr", "", "also serve HTTPS (and HTTP/2) on this address, with -cert and -key")
	certFile := flag.String("cert", "", "TLS certificate file (PEM), read by every worker as it starts")
	keyFile := flag.String("key", "", "TLS key file (PEM)")
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
	var err error
	if *tlsAddr == "" {
		err = prefork.New(cfg).Run(http.DefaultServeMux)
	} else {
		cfg.Addresses = []prefork.Address{{Name: "http", Addr: cfg.Addr}, {Name: "https", Addr: *tlsAddr}}
		cfg.Addr = ""
		err = prefork.New(cfg).Serve(func(ctx context.Context, ln net.Listener) error {
			return serveBoth(ctx, ln, *certFile, *keyFile)
		})
	}
	if err != nil {
		log.Fatal(err)
	}
}

// serveBoth serves the handler on the main listener and over HTTPS on the
// "https" one, each with forkline's drain (prefork.ServeHTTP).
func serveBoth(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile) // a reload reads renewed files
	if err != nil {
		return err
	}
	tlsLn, err := prefork.Listener(ctx, "https")
	if err != nil {
		return err
	}
	srv := func() *http.Server {
		return &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: prefork.DefaultReadHeaderTimeout, IdleTimeout: prefork.DefaultIdleTimeout}
	}
	secure := srv()
	secure.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	errc := make(chan error, 1)
	go func() { errc <- prefork.ServeHTTP(ctx, tlsLn, secure) }()
	return errors.Join(prefork.ServeHTTP(ctx, ln, srv()), <-errc)
}
