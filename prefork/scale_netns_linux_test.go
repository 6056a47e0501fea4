package prefork_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// TestScaleDownMigration measures what net.ipv4.tcp_migrate_req does to a
// scale-down in reuseport mode. SetWorkers(n-1) closes the parent's copy of
// the highest slot's socket and drains that slot's worker, whose close is
// the socket's last: connections still in its accept queue then are reset
// (tcp_migrate_req=0) or handed to the other slots' sockets (=1).
//
// The sysctl is per network namespace, so the test never touches the
// machine's: it creates a namespace per setting, sets the sysctl there and
// runs the "scale-migrate" helper inside it. The helper is the parent
// (in-process, so it can call SetWorkers and see events), runs the load
// clients itself, and prints its figures as one JSON line.
//
// Connections are made to queue on the leaving socket in two ways (see
// scaleMigrateMain): "gate" holds the leaving worker's accept loop, so its
// whole queue is there when it closes the socket (the kernel's part,
// exactly); "sigstop" stops a worker of Cluster.Run, so that its own drain
// meets a full queue (the product's part: what the drain leaves queued).
//
// With tcp_migrate_req=1 the test asserts that no request failed; with 0,
// for "gate" the count is the kernel's measurement and is only logged, and
// through Run's drain ("sigstop") nothing may fail either: every client is
// already queued, and the drain serves the queue before the socket's last
// close.
//
// The test runs alone (no t.Parallel): its figures are timings of the
// kernel's, and it runs 32 clients of its own.
func TestScaleDownMigration(t *testing.T) {
	useHelper("scale-migrate") // also when it skips
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("needs ip(8) to create a network namespace")
	}
	sysctlCmd, err := exec.LookPath("sysctl")
	if err != nil {
		t.Skip("needs sysctl(8) to set tcp_migrate_req in the namespace")
	}
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_migrate_req"); err != nil {
		t.Skip("the kernel has no net.ipv4.tcp_migrate_req (Linux 5.14+)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	const clients = 32
	holds := []struct {
		name  string
		queue int // accept queue to wait for on the leaving socket
	}{
		// Every client ends up queued on the held socket: nothing else
		// can arrive, so the queue at close is exactly this.
		{"gate", clients},
		// A stopped worker may hold an accepted connection it has not
		// answered, so not every client can be queued.
		{"sigstop", clients * 3 / 4},
	}
	reports := make(map[string]scaleReport)
	for _, migrate := range []int{0, 1} {
		t.Run(fmt.Sprintf("tcp_migrate_req=%d", migrate), func(t *testing.T) {
			ns := newScaleNetns(t, ipCmd)
			scaleRun(t, ipCmd, "netns", "exec", ns, sysctlCmd, "-q", "-w", fmt.Sprintf("net.ipv4.tcp_migrate_req=%d", migrate))
			for _, h := range holds {
				t.Run(h.name, func(t *testing.T) {
					rep := runScaleHelper(t, ipCmd, ns, exe,
						"-hold="+h.name, "-workers=4", "-clients="+strconv.Itoa(clients),
						"-rounds=3", "-queue="+strconv.Itoa(h.queue), "-watchdog=20s")
					if rep.Migrate != migrate {
						t.Fatalf("the helper read tcp_migrate_req=%d in %s, want %d", rep.Migrate, ns, migrate)
					}
					for i, r := range rep.Rounds {
						t.Logf("round %d: queued %d (held %d), failed %d of %d requests %v; kernel: %d migrated, %d migrations failed, %d RSTs sent; %d ms",
							i+1, r.Queued, r.Held, r.Failed, r.Requests, r.Errors, r.Migrated, r.MigrateFailed, r.OutRsts, r.MS)
					}
					if got, want := rep.Warned, migrate == 0; got != want {
						t.Errorf("the parent logged the tcp_migrate_req warning: %v, want %v", got, want)
					}
					// With tcp_migrate_req=1 the kernel moves what is queued;
					// through the product's own drain (sigstop: the worker
					// accepts its whole queue before it closes the socket)
					// nothing is lost even at 0, since every client is
					// already queued and none arrives in between.
					if migrate == 1 || h.name == "sigstop" {
						for i, r := range rep.Rounds {
							if r.Failed > 0 {
								t.Errorf("%s round %d: %d of %d requests failed with tcp_migrate_req=%d (%v), want none: %d queued",
									h.name, i+1, r.Failed, r.Requests, migrate, r.Errors, r.Queued)
							}
						}
					}
					reports[fmt.Sprintf("%s/%d", h.name, migrate)] = rep
				})
			}
		})
	}
	for _, h := range holds {
		r0, ok0 := reports[h.name+"/0"]
		r1, ok1 := reports[h.name+"/1"]
		if ok0 && ok1 {
			t.Logf("%s: scale-down with tcp_migrate_req=0: %s; =1: %s", h.name, r0.summary(), r1.summary())
		}
	}
}

// newScaleNetns creates a network namespace with its loopback up, and
// deletes it when the test ends.
func newScaleNetns(t *testing.T, ipCmd string) string {
	t.Helper()
	name := fmt.Sprintf("forkline-%d-%d", os.Getpid(), scaleNetnsSeq.Add(1))
	if out, err := exec.Command(ipCmd, "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ipCmd, "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	scaleRun(t, ipCmd, "-n", name, "link", "set", "lo", "up")
	return name
}

var scaleNetnsSeq atomic.Int32

func scaleRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// runScaleHelper runs the scale-migrate helper in ns and returns its report.
func runScaleHelper(t *testing.T, ipCmd, ns, exe string, args ...string) scaleReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ipCmd, append([]string{"netns", "exec", ns, exe}, args...)...)
	// A race-enabled worker sleeps 1 s in os.Exit by default: the leaving
	// worker's exit is what a round waits for.
	cmd.Env = append(os.Environ(), useHelper("scale-migrate"),
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("scale-migrate helper in %s: %v\nstdout:\n%s\nstderr:\n%s", ns, err, &stdout, &stderr)
	}
	var rep scaleReport
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		t.Fatalf("scale-migrate helper in %s: no report: %v\nstdout:\n%s\nstderr:\n%s", ns, err, &stdout, &stderr)
	}
	if len(rep.Rounds) == 0 {
		t.Fatalf("scale-migrate helper in %s: no round in report %s", ns, lines[len(lines)-1])
	}
	return rep
}

// scaleReport is what the scale-migrate helper prints, as one JSON line.
type scaleReport struct {
	Hold      string       `json:"hold"`    // how the leaving worker was kept from accepting
	Migrate   int          `json:"migrate"` // tcp_migrate_req in the helper's namespace
	Workers   int          `json:"workers"`
	Clients   int          `json:"clients"`
	Rounds    []scaleRound `json:"rounds"`
	Warned    bool         `json:"warned"` // the parent warned that tcp_migrate_req is 0
	ElapsedMS int64        `json:"elapsed_ms"`
}

// scaleRound is one scale-down from Workers to Workers-1.
type scaleRound struct {
	// Queued is the accept queue of the leaving slot's socket as the
	// scale-down starts: with -hold=gate, just before SetWorkers (with
	// every client queued there, it is also the queue at close); with
	// -hold=sigstop, after SetWorkers and before SIGCONT. A request that
	// times out while queued is failed but its connection stays in the
	// queue, which can then exceed the number of clients.
	Queued   int            `json:"queued"`
	Held     int            `json:"held"`     // -hold=sigstop: connections the stopped worker had accepted
	Requests int            `json:"requests"` // requests started during the round
	Failed   int            `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"` // failures by kind

	// Kernel counters of the namespace over the round: what the socket
	// still had queued when it closed was migrated (=1) or reset (=0).
	Migrated      int64 `json:"migrated"`       // TcpExt TCPMigrateReqSuccess
	MigrateFailed int64 `json:"migrate_failed"` // TcpExt TCPMigrateReqFailure
	OutRsts       int64 `json:"out_rsts"`       // Tcp OutRsts
	MS            int64 `json:"ms"`
}

// summary is "N lost of M queued (a+b+c of x+y+z)".
func (r scaleReport) summary() string {
	var lost, queued []string
	var sumLost, sumQueued int
	for _, rd := range r.Rounds {
		lost = append(lost, strconv.Itoa(rd.Failed))
		queued = append(queued, strconv.Itoa(rd.Queued))
		sumLost += rd.Failed
		sumQueued += rd.Queued
	}
	return fmt.Sprintf("%d lost of %d queued over %d scale-downs (%s of %s)",
		sumLost, sumQueued, len(r.Rounds), strings.Join(lost, "+"), strings.Join(queued, "+"))
}

func init() { registerHelper("scale-migrate", scaleMigrateMain) }

// scaleMigrateMain is the parent of a cluster and its own load, run inside
// a network namespace. It also runs as every worker of that cluster.
//
// Each round makes connections queue on the highest slot's socket and then
// removes that slot with SetWorkers(n-1), which closes the parent's copy
// and drains the worker; the worker's close of its listener is the
// socket's last, and what is queued then is what tcp_migrate_req governs.
// The slot is added back before the next round. Clients run only during
// rounds, so every request is counted in the round it started in.
//
// -hold says how the leaving worker is kept from accepting:
//
//   - gate: workers serve HTTP from a ServeFunc whose listener stops
//     calling Accept once the parent's Request "hold" has been answered (at
//     most the one Accept already waiting completes). Connections queue
//     until every client is stuck on the socket; then SetWorkers. The
//     worker's drain closes the listener without another Accept, so the
//     whole queue meets the close: the measure is exact.
//   - sigstop: workers run Cluster.Run, the product's own drain. The
//     leaving worker is stopped with SIGSTOP until -queue connections
//     wait (or every client but those whose connection it had accepted
//     already, if fewer); SetWorkers then runs while it is still stopped, so the drain is
//     already in its channel when SIGCONT lets it run. (SIGCONT first would
//     let it accept its whole queue in the time SetWorkers takes.) Its
//     server's accept loop wakes with the drain and races it; what the
//     drain leaves queued when it closes the listener is what is lost at 0.
func scaleMigrateMain(args []string) int {
	fs := flag.NewFlagSet("scale-migrate", flag.ContinueOnError)
	hold := fs.String("hold", "gate", "gate or sigstop")
	workers := fs.Int("workers", 4, "workers to start with; each round removes the highest and adds it back")
	clients := fs.Int("clients", 32, "concurrent clients, one fresh connection per request")
	rounds := fs.Int("rounds", 3, "scale-downs")
	queue := fs.Int("queue", 32, "accept-queue length on the leaving socket to wait for before the scale-down")
	watchdog := fs.Duration("watchdog", 20*time.Second, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *hold != "gate" && *hold != "sigstop" {
		fmt.Fprintf(os.Stderr, "scale-migrate: -hold=%s: want gate or sigstop\n", *hold)
		return 2
	}

	logs := newFeed[string]()
	events := make(chan prefork.Event, 1024)
	held := make(chan struct{}) // gate: closed when the worker must stop accepting
	var holdOnce sync.Once
	c := prefork.New(prefork.Config{
		Addr:        "127.0.0.1:0",
		Workers:     *workers,
		Mode:        prefork.ModeReusePort,
		Steering:    prefork.SteerOff, // this measures the kernel's tcp_migrate_req: no program may move queues
		StopTimeout: 5 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, lineWriter{logs}), &slog.HandlerOptions{Level: slog.LevelWarn})),
		OnEvent:     func(ev prefork.Event) { events <- ev },
		OnRequest: func(m prefork.Message) ([]byte, error) {
			if string(m.Data) != "hold" {
				return nil, fmt.Errorf("unknown request %q", m.Data)
			}
			holdOnce.Do(func() { close(held) })
			return []byte("held"), nil
		},
	})
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d\n", prefork.WorkerID(), os.Getpid())
	})
	serve := func() error { return c.Run(hello) }
	if *hold == "gate" {
		serve = func() error { return c.Serve(scaleGatedServe(hello, held)) }
	}
	if prefork.IsWorker() {
		if err := serve(); err != nil {
			fmt.Fprintln(os.Stderr, "scale-migrate worker:", err)
			return 1
		}
		return 0
	}

	start := time.Now()
	migrate, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale-migrate:", err)
		return 1
	}
	rep := scaleReport{Hold: *hold, Workers: *workers, Clients: *clients}
	rep.Migrate, _ = strconv.Atoi(strings.TrimSpace(string(migrate)))

	d := &scaleDriver{
		c:        c,
		hold:     *hold,
		clients:  *clients,
		events:   events,
		runDone:  make(chan struct{}),
		deadline: time.Now().Add(*watchdog),
		load:     newScaleLoad(),
	}
	go func() {
		d.runErr = serve()
		close(d.runDone)
	}()
	err = d.drive(&rep, *workers, *clients, *rounds, *queue)

	// Stop the cluster whatever happened, and wait for it.
	ctx, cancel := context.WithDeadline(context.Background(), d.deadline.Add(5*time.Second))
	defer cancel()
	if serr := c.Shutdown(ctx); serr != nil {
		err = errors.Join(err, fmt.Errorf("shutdown: %w", serr))
	} else if <-d.runDone; d.runErr != nil && !errors.Is(d.runErr, prefork.ErrServerClosed) {
		err = errors.Join(err, fmt.Errorf("run: %w", d.runErr))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale-migrate:", err)
		return 1
	}
	rep.Warned = strings.Contains(strings.Join(logs.all(), "\n"), "tcp_migrate_req is 0")
	rep.ElapsedMS = time.Since(start).Milliseconds()
	out, _ := json.Marshal(rep)
	fmt.Printf("%s\n", out)
	return 0
}

// scaleGatedServe is a worker's ServeFunc for -hold=gate: it serves h
// until held is closed, then accepts nothing more. On drain it closes the
// listener first, so that what is queued meets the close, then lets the
// requests it has accepted finish.
func scaleGatedServe(h http.Handler, held <-chan struct{}) prefork.ServeFunc {
	return func(ctx context.Context, ln net.Listener) error {
		gl := &scaleGatedListener{Listener: ln, held: held, closed: make(chan struct{})}
		srv := &http.Server{Handler: h}
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(gl) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		gl.Close()
		<-errc
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
		return nil
	}
}

// scaleGatedListener stops accepting once held is closed.
type scaleGatedListener struct {
	net.Listener
	held      <-chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *scaleGatedListener) Accept() (net.Conn, error) {
	select {
	case <-l.held:
		<-l.closed
		return nil, net.ErrClosed
	default:
		return l.Listener.Accept()
	}
}

func (l *scaleGatedListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.Listener.Close()
	})
	return err
}

// scaleDriver is the helper's parent side.
type scaleDriver struct {
	c        *prefork.Cluster
	hold     string
	clients  int
	events   chan prefork.Event
	runDone  chan struct{} // closed when Run has returned runErr
	runErr   error
	deadline time.Time // the watchdog
	load     *scaleLoad
	addr     string
	port     int
}

func (d *scaleDriver) drive(rep *scaleReport, workers, clients, rounds, queue int) error {
	for seen := map[int]bool{}; len(seen) < workers; {
		ev, err := d.event("the first workers listening", func(ev prefork.Event) bool { return ev.Type == prefork.EventListening })
		if err != nil {
			return err
		}
		seen[ev.Worker.ID] = true
		d.addr = ev.Addr
	}
	_, port, err := net.SplitHostPort(d.addr)
	if err != nil {
		return err
	}
	d.port, _ = strconv.Atoi(port)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for range clients {
		wg.Go(func() {
			for {
				r := d.load.begin(ctx)
				if r == nil {
					return
				}
				r.end(scaleGet(d.addr, 5*time.Second))
			}
		})
	}

	for i := range rounds {
		r, err := d.scaleDown(workers, queue)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		rep.Rounds = append(rep.Rounds, r)
		if err := d.c.SetWorkers(workers); err != nil {
			return fmt.Errorf("round %d: scaling back up: %w", i+1, err)
		}
		if _, err := d.event(fmt.Sprintf("worker %d listening again", workers), func(ev prefork.Event) bool {
			return ev.Type == prefork.EventListening && ev.Worker.ID == workers
		}); err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
	}
	return nil
}

// scaleDown runs one round: it removes slot n (of n) with connections
// queued on its socket, and counts what the clients saw.
func (d *scaleDriver) scaleDown(n, queue int) (res scaleRound, err error) {
	var leaving prefork.WorkerInfo
	for _, w := range d.c.Workers() {
		if w.ID == n && w.State == prefork.StateListening {
			leaving = w
		}
	}
	if leaving.PID == 0 {
		return res, fmt.Errorf("no listening worker in slot %d: %+v", n, d.c.Workers())
	}
	inode, err := scaleListenInode(leaving.PID, d.port)
	if err != nil {
		return res, err
	}
	before, err := scaleNetCounters()
	if err != nil {
		return res, err
	}
	start := time.Now()
	r := d.load.open()
	closed := false
	defer func() {
		if !closed {
			d.load.close(r)
		}
	}()

	target := queue
	stopped := false
	if d.hold == "sigstop" {
		if err := syscall.Kill(leaving.PID, syscall.SIGSTOP); err != nil {
			return res, fmt.Errorf("SIGSTOP worker %d: %w", leaving.PID, err)
		}
		stopped = true
		defer func() {
			if stopped {
				syscall.Kill(leaving.PID, syscall.SIGCONT)
			}
		}()
		if err := d.poll(fmt.Sprintf("worker %d stopped", leaving.PID), func() (bool, error) {
			p, _ := procStat(leaving.PID)
			return p.State == "T", nil
		}); err != nil {
			return res, err
		}
		// The clients whose connections the stopped worker has accepted
		// wait for it; all the others end up queued on its socket.
		if res.Held, err = heldBy(leaving.PID, d.port); err != nil {
			return res, err
		}
		target = min(queue, d.clients-res.Held)
	} else {
		ctx, cancel := context.WithDeadline(context.Background(), d.deadline)
		_, err := d.c.Request(ctx, n, []byte("hold"))
		cancel()
		if err != nil {
			return res, fmt.Errorf("hold worker %d: %w", n, err)
		}
	}
	if err := d.poll(fmt.Sprintf("%d connections queued on slot %d", target, n), func() (bool, error) {
		q, err := scaleAcceptQueue(inode)
		res.Queued = q
		return q >= target, err
	}); err != nil {
		return res, fmt.Errorf("%w (queued %d)", err, res.Queued)
	}
	if err := d.c.SetWorkers(n - 1); err != nil {
		return res, err
	}
	if stopped {
		// The parent's copy is closed; the stopped worker's keeps the
		// socket, and what queued meanwhile, until it runs again.
		if res.Queued, err = scaleAcceptQueue(inode); err != nil {
			return res, fmt.Errorf("after SetWorkers(%d): %w", n-1, err)
		}
		if err := syscall.Kill(leaving.PID, syscall.SIGCONT); err != nil {
			return res, fmt.Errorf("SIGCONT worker %d: %w", leaving.PID, err)
		}
		stopped = false
	}
	ev, err := d.event(fmt.Sprintf("exit of worker %d (pid %d)", n, leaving.PID), func(ev prefork.Event) bool {
		return ev.Type == prefork.EventExit && ev.Worker.PID == leaving.PID
	})
	if err != nil {
		return res, err
	}
	if !ev.Asked || ev.Err != nil {
		return res, fmt.Errorf("leaving worker's exit: asked %v, err %v, want asked and no error", ev.Asked, ev.Err)
	}
	d.load.close(r) // waits for the round's requests to end
	closed = true
	after, err := scaleNetCounters()
	if err != nil {
		return res, err
	}
	res.Requests, res.Failed, res.Errors = r.requests, r.failed, r.errs
	res.Migrated = after["TcpExt.TCPMigrateReqSuccess"] - before["TcpExt.TCPMigrateReqSuccess"]
	res.MigrateFailed = after["TcpExt.TCPMigrateReqFailure"] - before["TcpExt.TCPMigrateReqFailure"]
	res.OutRsts = after["Tcp.OutRsts"] - before["Tcp.OutRsts"]
	res.MS = time.Since(start).Milliseconds()
	return res, nil
}

// event returns the next event match accepts, or an error when the cluster
// stops or the watchdog fires first.
func (d *scaleDriver) event(what string, match func(prefork.Event) bool) (prefork.Event, error) {
	watchdog := time.NewTimer(time.Until(d.deadline))
	defer watchdog.Stop()
	for {
		select {
		case ev := <-d.events:
			if match(ev) {
				return ev, nil
			}
		case <-d.runDone:
			return prefork.Event{}, fmt.Errorf("cluster stopped while waiting for %s: %v", what, d.runErr)
		case <-watchdog.C:
			return prefork.Event{}, fmt.Errorf("watchdog: no %s", what)
		}
	}
}

// poll calls cond every millisecond until it holds, fails, or the
// watchdog fires: the kernel's figures polled here have no notification.
func (d *scaleDriver) poll(what string, cond func() (bool, error)) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	watchdog := time.NewTimer(time.Until(d.deadline))
	defer watchdog.Stop()
	for {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-tick.C:
		case <-watchdog.C:
			return fmt.Errorf("watchdog: no %s", what)
		}
	}
}

// scaleLoad counts the clients' requests by round. Between rounds the
// clients wait, so every request of a round starts and ends in it.
type scaleLoad struct {
	mu    sync.Mutex
	round *scaleTally   // the open round; nil between rounds
	wake  chan struct{} // closed when a round opens
}

type scaleTally struct {
	load     *scaleLoad
	inflight sync.WaitGroup
	requests int
	failed   int
	errs     map[string]int
}

func newScaleLoad() *scaleLoad {
	return &scaleLoad{wake: make(chan struct{})}
}

// begin waits for an open round and counts a request in it; nil when ctx
// ends first.
func (l *scaleLoad) begin(ctx context.Context) *scaleTally {
	for {
		l.mu.Lock()
		if r := l.round; r != nil {
			r.inflight.Add(1)
			l.mu.Unlock()
			return r
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

func (r *scaleTally) end(err error) {
	r.load.mu.Lock()
	r.requests++
	if err != nil {
		r.failed++
		r.errs[scaleErrKind(err)]++
	}
	r.load.mu.Unlock()
	r.inflight.Done()
}

func (l *scaleLoad) open() *scaleTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &scaleTally{load: l, errs: map[string]int{}}
	l.round = r
	close(l.wake)
	return r
}

// close ends the round and waits for its requests; each is bounded by its
// own timeout.
func (l *scaleLoad) close(r *scaleTally) {
	l.mu.Lock()
	l.round = nil
	l.wake = make(chan struct{})
	l.mu.Unlock()
	r.inflight.Wait() // every Add happened under mu, before round was nil
}

// scaleGet makes one request on a fresh connection.
func scaleGet(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: forkline\r\nConnection: close\r\n\r\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte("Hello from")) {
		return fmt.Errorf("answer %d %q", resp.StatusCode, body)
	}
	return nil
}

// scaleErrKind names a failure: where it happened and why.
func scaleErrKind(err error) string {
	where, _, _ := strings.Cut(err.Error(), ":")
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return where + ": reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return where + ": refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return where + ": eof"
	case errors.As(err, &ne) && ne.Timeout():
		return where + ": timeout"
	}
	return err.Error()
}

// scaleListenInode returns the inode of the listening socket on port that
// process pid holds (a worker holds its slot's socket only).
func scaleListenInode(pid, port int) (string, error) {
	socks, err := procNetTCP()
	if err != nil {
		return "", err
	}
	mine, err := socketInodes(pid)
	if err != nil {
		return "", err
	}
	for _, s := range socks {
		if s.listen && s.localPort == port && mine[s.inode] {
			return s.inode, nil
		}
	}
	return "", fmt.Errorf("process %d holds no listening socket on port %d", pid, port)
}

// scaleAcceptQueue returns the accept-queue length of the listening socket
// inode: /proc/net/tcp's rx_queue for a LISTEN socket.
func scaleAcceptQueue(inode string) (int, error) {
	socks, err := procNetTCP()
	if err != nil {
		return 0, err
	}
	for _, s := range socks {
		if s.inode == inode {
			return s.rxQueue, nil
		}
	}
	return 0, fmt.Errorf("listening socket %s is gone", inode)
}

// scaleNetCounters reads this namespace's TCP counters, as "TcpExt.Name"
// and "Tcp.Name" (what nstat shows).
func scaleNetCounters() (map[string]int64, error) {
	m := make(map[string]int64)
	for _, file := range []string{"/proc/net/netstat", "/proc/net/snmp"} {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) != len(values) || len(names) == 0 || names[0] != values[0] {
				return nil, fmt.Errorf("%s: unexpected lines %q, %q", file, lines[i], lines[i+1])
			}
			group := strings.TrimSuffix(names[0], ":")
			for j := 1; j < len(names); j++ {
				v, _ := strconv.ParseInt(values[j], 10, 64)
				m[group+"."+names[j]] = v
			}
		}
	}
	return m, nil
}
