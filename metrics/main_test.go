package metrics_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/forkline/forkline/prefork"
)

// The test binary is its own cluster's executable: a test runs the parent
// in this process (the collector needs one), and the parent starts its
// workers by running this binary again, with the variables that make
// prefork.IsWorker true. Such a process serves as a worker and exits
// without running the tests.
func TestMain(m *testing.M) {
	if prefork.IsWorker() {
		os.Exit(workerMain())
	}
	// A race-enabled process sleeps 1 s in os.Exit by default: every
	// drained worker would spend it as a process that no longer serves.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	goleak.VerifyTestMain(m)
}

// workerConfig is the Config the workers and the tests' parents share:
// the parent binds Addr, a worker serves the socket it is handed.
func workerConfig() prefork.Config {
	return prefork.Config{Addr: "127.0.0.1:0", StopTimeout: 5 * time.Second}
}

// workerMain serves a hello handler in a worker.
func workerMain() int {
	cfg := workerConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	err := prefork.New(cfg).Run(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}
