package prefork_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forkline/forkline/prefork"
)

// The test binary is its own child: with FORKLINE_TEST_HELPER set it runs
// the named helper program instead of the tests. The helper's parent and its
// workers are all this binary; prefork tells them apart.
const envHelper = "FORKLINE_TEST_HELPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(envHelper); name != "" {
		helper, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(helper(os.Args[1:]))
	}
	// A race-enabled process sleeps 1 s in os.Exit by default; workers
	// exit often here.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	goleak.VerifyTestMain(m)
}

var helpers = map[string]func(args []string) int{
	"hello": helloMain,
}

// helloMain is examples/hello with JSON logs at debug level, for tests to
// read: the parent's records and the workers' share the stderr pipe.
func helloMain(args []string) int {
	var cfg prefork.Config
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "")
	fs.IntVar(&cfg.Workers, "workers", 2, "")
	fs.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", 10*time.Second, "")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 0, "")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 0, "")
	fs.IntVar(&cfg.MaxRequests, "max-requests", 0, "")
	fs.IntVar(&cfg.MaxRequestsJitter, "max-requests-jitter", 0, "")
	fs.Int64Var(&cfg.MaxMemory, "max-memory", 0, "")
	failStart := fs.Bool("fail-start", false, "every worker fails before serving")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		// Send the headers first: the client learns the request is in
		// flight here before the slow part starts.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select { // the slow work itself
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "Slow hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})

	c := prefork.New(cfg)
	var err error
	if *failStart {
		err = c.Serve(func(ctx context.Context, ln net.Listener) error {
			return errors.New("cannot open /nonexistent/config.toml: no such file or directory")
		})
	} else {
		err = c.Run(mux)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		return 1
	}
	return 0
}
