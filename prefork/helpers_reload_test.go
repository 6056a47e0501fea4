//go:build unix

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
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkline/forkline/prefork"
)

// Helpers of the reload tests (reload_linux_test.go).
const (
	// envVersion is the version the "reload" helper reports in its
	// answers; a replaced binary sets it (default "1").
	envVersion = "HELLO_VERSION"
	// envExecPath and envExecHelper make the "exec" helper replace itself
	// with the binary at envExecPath running helper envExecHelper: a
	// cluster whose parent runs from a path the test controls, in the
	// process (pid, process group, stderr) that startHelper gave it.
	envExecPath   = "RELOAD_TEST_EXEC"
	envExecHelper = "RELOAD_TEST_EXEC_HELPER"
)

func init() {
	helpers["reload"] = reloadMain
	helpers["exec"] = execMain
}

// execMain becomes $RELOAD_TEST_EXEC, running helper
// $RELOAD_TEST_EXEC_HELPER with the same arguments.
func execMain(args []string) int {
	path := os.Getenv(envExecPath)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envHelper+"=") && !strings.HasPrefix(kv, envExecPath+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envHelper+"="+os.Getenv(envExecHelper))
	err := syscall.Exec(path, append([]string{path}, args...), env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 2
}

// reloadMain is the hello helper with what the reload tests need besides:
//
//   - answers "Hello from worker=W pid=P gen=G version=V", V from
//     $HELLO_VERSION (default 1);
//   - -fail-from-gen N: workers of generation N and later fail at start,
//     without accepting;
//   - -slow-from-gen N: workers of generation N and later never become
//     ready: they wait for their drain without accepting;
//   - in the parent, SIGUSR1 logs {"msg":"goroutines","n":runtime.NumGoroutine()};
//     SIGUSR2 logs "api reload call", calls Cluster.Reload in a goroutine
//     of its own (calls may overlap) and logs {"msg":"api reload","err":...}.
func reloadMain(args []string) int {
	var cfg prefork.Config
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "")
	fs.IntVar(&cfg.Workers, "workers", 2, "")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", 10*time.Second, "")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 0, "")
	failFromGen := fs.Int("fail-from-gen", 0, "workers of this generation and later fail at start (0: none)")
	slowFromGen := fs.Int("slow-from-gen", 0, "workers of this generation and later never accept: they wait for their drain (0: none)")
	reloadTimeout := fs.Duration("reload-timeout", 30*time.Second, "bound of each Cluster.Reload call on SIGUSR2")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Logger = log
	version := os.Getenv(envVersion)
	if version == "" {
		version = "1"
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d version=%s\n", prefork.WorkerID(), os.Getpid(), prefork.Generation(), version)
	})
	c := prefork.New(cfg)

	if !prefork.IsWorker() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
		done := make(chan struct{})
		var owned sync.WaitGroup // the signal loop and the Reload calls
		defer func() {
			signal.Stop(sigs)
			close(done)
			owned.Wait()
		}()
		owned.Add(1)
		go func() {
			defer owned.Done()
			for {
				select {
				case sig := <-sigs:
					if sig == syscall.SIGUSR1 {
						log.Info("goroutines", "n", runtime.NumGoroutine())
						continue
					}
					log.Info("api reload call")
					owned.Add(1)
					go func() {
						defer owned.Done()
						ctx, cancel := context.WithTimeout(context.Background(), *reloadTimeout)
						defer cancel()
						log.Info("api reload", "err", c.Reload(ctx))
					}()
				case <-done:
					return
				}
			}
		}()
	}

	var err error
	switch gen := prefork.Generation(); {
	case *failFromGen > 0 && gen >= *failFromGen:
		err = c.Serve(func(ctx context.Context, ln net.Listener) error {
			return errors.New("generation " + strconv.Itoa(prefork.Generation()) + " cannot open /nonexistent/config.toml: no such file or directory")
		})
	case *slowFromGen > 0 && gen >= *slowFromGen:
		err = c.Serve(func(ctx context.Context, ln net.Listener) error {
			<-ctx.Done()
			return nil
		})
	default:
		err = c.Run(mux)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reload helper:", err)
		return 1
	}
	return 0
}
