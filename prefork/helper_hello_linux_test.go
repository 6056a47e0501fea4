package prefork_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/forkline/forkline/prefork"
)

func init() {
	registerHelper("hello", helloMain)
	registerHelper("exec", execMain)
}

const (
	// envVersion is the version the hello helper reports in its answers;
	// a replaced binary sets it (default "1").
	envVersion = "HELLO_VERSION"
	// envExecPath and envExecHelper make the "exec" helper replace itself
	// with the binary at envExecPath running helper envExecHelper: a
	// cluster whose parent runs from a path the test controls, in the
	// process (pid, process group, pipes) that startHelper gave it.
	envExecPath   = "RELOAD_TEST_EXEC"
	envExecHelper = "RELOAD_TEST_EXEC_HELPER"

	// exitNoParent is the hello helper's exit code when Run returned
	// prefork.ErrNoParent.
	exitNoParent = 3
)

// execMain becomes $RELOAD_TEST_EXEC, running helper $RELOAD_TEST_EXEC_HELPER
// with the same arguments. It keeps the observation pipe: the helper it
// becomes takes it.
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

// helloMain is examples/hello with JSON logs at debug level on stderr (the
// parent's and the workers' share it), its parent's observations on the
// pipe, and what the tests do to it:
//
//   - GET / answers "Hello from worker=W pid=P gen=G version=V", V from
//     $HELLO_VERSION (default 1); /slow?d=D answers after D; /panic
//     panics (net/http recovers it and logs it to the server's ErrorLog);
//     /env answers the output of env(1) run by the worker, /environ the
//     worker's own environment; /orphans?n=N makes N orphans that exit
//     50 ms later and answers their pids; /procs answers every process
//     this worker can see (its PID namespace), as procEntry values.
//   - -fail-from-gen N: workers of generation N and later fail at start,
//     without accepting; -slow-from-gen N: they never become ready (they
//     wait for their drain); -hold-from-gen N: they wait for a SIGUSR1
//     (sent once the test has seen them online), then serve;
//     -panic-start: every worker panics before it serves.
//   - in the parent, SIGUSR1 writes a kindReport observation; SIGWINCH
//     calls Cluster.Reload in a goroutine of its own (calls may overlap)
//     and writes kindReloadCall, then kindReload with its result. Run's
//     result is written as kindRun.
func helloMain(args []string) int {
	obs := openObserver()
	var cfg prefork.Config
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "")
	fs.IntVar(&cfg.Workers, "workers", 2, "")
	fs.TextVar(&cfg.Mode, "mode", prefork.ModeAuto, "")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", 10*time.Second, "")
	fs.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 0, "")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 0, "")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 0, "")
	fs.IntVar(&cfg.MaxRequests, "max-requests", 0, "")
	fs.IntVar(&cfg.MaxRequestsJitter, "max-requests-jitter", 0, "")
	fs.Int64Var(&cfg.MaxMemory, "max-memory", 0, "")
	fs.StringVar(&cfg.ControlSocket, "control", "", "")
	failFromGen := fs.Int("fail-from-gen", 0, "workers of this generation and later fail at start (0: none)")
	slowFromGen := fs.Int("slow-from-gen", 0, "workers of this generation and later never accept: they wait for their drain (0: none)")
	holdFromGen := fs.Int("hold-from-gen", 0, "workers of this generation and later wait for SIGUSR1 before they serve (0: none)")
	panicStart := fs.Bool("panic-start", false, "workers panic before they serve")
	var web webFlags
	fs.StringVar(&web.certFile, "tls-cert", "", "serve HTTPS (and HTTP/2) with this certificate (RunServerTLS)")
	fs.StringVar(&web.keyFile, "tls-key", "", "its key")
	fs.BoolVar(&web.h2c, "h2c", false, "serve HTTP/2 without TLS too (RunServer, Protocols)")
	fs.DurationVar(&web.readHeaderTimeout, "read-header-timeout", 0, "serve with RunServer and this ReadHeaderTimeout (0: Run's defaults)")
	reloadTimeout := fs.Duration("reload-timeout", 30*time.Second, "bound of each Cluster.Reload call on SIGWINCH")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnEvent = obs.event
	// The upgrade tests' bad build (its executable ends with badBuildMark)
	// names its address otherwise: it cannot adopt an upgrade's state.
	if bytes.HasSuffix(exeTail(), []byte(badBuildMark)) {
		cfg.Addresses = []prefork.Address{{Name: "other", Network: "tcp", Addr: cfg.Addr}}
		cfg.Addr = ""
	}
	version := os.Getenv(envVersion)
	if version == "" {
		version = "1"
	}
	var inbox inbox
	cfg.OnMessage = inbox.add
	c := prefork.New(cfg)
	if obs != nil {
		defer helloParentSignals(c, obs, *reloadTimeout)()
	}

	gen := prefork.Generation()
	var release chan os.Signal
	if *holdFromGen > 0 && gen >= *holdFromGen {
		release = make(chan os.Signal, 1)
		signal.Notify(release, syscall.SIGUSR1) // before the worker is online
	}
	mux := helloMux(version)
	// /send?to=N&data=D sends D to worker N (relayed by the parent);
	// /inbox lists what this worker received.
	mux.HandleFunc("/send", func(w http.ResponseWriter, r *http.Request) {
		to, _ := strconv.Atoi(r.URL.Query().Get("to"))
		if err := c.Send(to, []byte(r.URL.Query().Get("data"))); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d version=%s\n", prefork.WorkerID(), os.Getpid(), prefork.Generation(), version)
	})
	mux.HandleFunc("/inbox", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d version=%s\n%s", prefork.WorkerID(), os.Getpid(), prefork.Generation(), version, inbox.text())
	})
	var err error
	switch {
	case *panicStart && prefork.IsWorker():
		panic("cannot load /nonexistent/config.toml: no such file or directory")
	case *failFromGen > 0 && gen >= *failFromGen:
		err = c.Serve(func(ctx context.Context, ln net.Listener) error {
			return errors.New("generation " + strconv.Itoa(gen) + " cannot open /nonexistent/config.toml: no such file or directory")
		})
	case *slowFromGen > 0 && gen >= *slowFromGen:
		err = c.Serve(func(ctx context.Context, ln net.Listener) error {
			<-ctx.Done()
			return nil
		})
	case release != nil:
		err = c.Serve(heldServe(mux, release))
	default:
		err = web.serve(c, mux)
	}
	obs.write(observation{Kind: kindRun, Err: errText(err)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		if errors.Is(err, prefork.ErrNoParent) {
			return exitNoParent
		}
		return 1
	}
	return 0
}

// helloParentSignals serves SIGUSR1 and SIGWINCH in the parent (see
// helloMain) until the function it returns is called.
func helloParentSignals(c *prefork.Cluster, obs *observer, reloadTimeout time.Duration) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGWINCH)
	done := make(chan struct{})
	var owned sync.WaitGroup // the signal loop and the Reload calls
	owned.Go(func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGUSR1 {
					var ws []workerObs
					for _, w := range c.Workers() {
						ws = append(ws, workerObsOf(w))
					}
					obs.write(observation{Kind: kindReport, N: runtime.NumGoroutine(), Workers: ws})
					continue
				}
				obs.write(observation{Kind: kindReloadCall})
				owned.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
					defer cancel()
					obs.write(observation{Kind: kindReload, Err: errText(c.Reload(ctx))})
				})
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(sigs)
		close(done)
		owned.Wait()
	}
}

// heldServe serves mux once release fires, with a plain http.Server: a
// held worker does not become ready (it calls no Accept) until then.
func heldServe(mux http.Handler, release <-chan os.Signal) prefork.ServeFunc {
	return func(ctx context.Context, ln net.Listener) error {
		select {
		case <-release:
		case <-ctx.Done():
			return nil
		}
		srv := &http.Server{Handler: mux}
		stop := context.AfterFunc(ctx, func() { srv.Shutdown(context.Background()) })
		defer stop()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

func helloMux(version string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d version=%s\n", prefork.WorkerID(), os.Getpid(), prefork.Generation(), version)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		// Send the headers first: the client learns the request is in
		// flight here before the slow part starts.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		work := time.NewTimer(d) // the slow work itself
		defer work.Stop()
		select {
		case <-work.C:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "Slow hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	mux.HandleFunc("/panic", func(http.ResponseWriter, *http.Request) {
		panic("the handler panicked")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		out, err := exec.Command("env").Output()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(out)
	})
	mux.HandleFunc("/environ", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, strings.Join(os.Environ(), "\n"))
	})
	mux.HandleFunc("/orphans", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		var pids []int
		for range n {
			// sh exits at once; its child, orphaned, exits 50 ms later.
			out, err := exec.Command("sh", "-c", "sleep 0.05 >/dev/null 2>&1 & echo $!").Output()
			pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil || perr != nil {
				http.Error(w, fmt.Sprintf("sh: %v, %v: %q", err, perr, out), http.StatusInternalServerError)
				return
			}
			pids = append(pids, pid)
		}
		json.NewEncoder(w).Encode(pids)
	})
	mux.HandleFunc("/procs", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(processes())
	})
	return mux
}

// badBuildMark ends the executable of the upgrade tests' bad build.
const badBuildMark = "\nforkline-test-build:bad-name\n"

// exeTail is the end of this process's executable file.
func exeTail() []byte {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() < 64 {
		return nil
	}
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, fi.Size()-64)
	return b[:n]
}

// inbox keeps the messages a hello worker received.
type inbox struct {
	mu   sync.Mutex
	msgs []string
}

func (in *inbox) add(m prefork.Message) {
	for _, f := range m.Files {
		f.Close()
	}
	in.mu.Lock()
	in.msgs = append(in.msgs, fmt.Sprintf("from %d: %s", m.From, m.Data))
	in.mu.Unlock()
}

func (in *inbox) text() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return strings.Join(in.msgs, "\n")
}
