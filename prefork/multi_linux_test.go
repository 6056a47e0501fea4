package prefork_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// Clusters of several addresses, UDP and unix sockets: the "multi" helper
// serves every address it is given, HTTP on stream ones (answering
// "Hello from worker=W pid=P gen=G addr=NAME"), an echo on datagram ones
// ("worker=W pid=P gen=G"). Its parent's log says where each address is
// bound ({"msg":"listening","name":...,"addr":...}).

func init() { registerHelper("multi", multiMain) }

func multiMain(args []string) int {
	obs := openObserver()
	fs := flag.NewFlagSet("multi", flag.ContinueOnError)
	addrs := fs.String("addrs", "main=tcp:127.0.0.1:0", "name=network:addr,...")
	perm := fs.Uint("perm", 0, "permissions of unix socket files")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := prefork.Config{Workers: 2, StopTimeout: 5 * time.Second, OnEvent: obs.event,
		Logger: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, spec := range strings.Split(*addrs, ",") {
		name, rest, _ := strings.Cut(spec, "=")
		network, addr, _ := strings.Cut(rest, ":")
		cfg.Addresses = append(cfg.Addresses, prefork.Address{Name: name, Network: network, Addr: addr, Perm: fsMode(*perm)})
	}
	c := prefork.New(cfg)
	var err error
	if strings.HasPrefix(cfg.Addresses[0].Network, "udp") {
		err = c.ServePacket(echo)
	} else {
		err = c.Serve(func(ctx context.Context, ln net.Listener) error { return serveAll(ctx, ln, cfg.Addresses) })
	}
	obs.write(observation{Kind: kindRun, Err: errText(err)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "multi:", err)
		return 1
	}
	return 0
}

func fsMode(p uint) fs.FileMode { return fs.FileMode(p) }

// serveAll serves HTTP on the main listener and on every other stream
// address, each with ServeHTTP's drain, and echoes on datagram ones.
func serveAll(ctx context.Context, main net.Listener, addrs []prefork.Address) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs))
	for i, a := range addrs {
		wg.Go(func() {
			var err error
			switch {
			case i == 0:
				err = prefork.ServeHTTP(ctx, main, helloServer(a.Name))
			case strings.HasPrefix(a.Network, "udp"):
				var pc net.PacketConn
				if pc, err = prefork.PacketConn(ctx, a.Name); err == nil {
					err = echo(ctx, pc)
				}
			default:
				var ln net.Listener
				if ln, err = prefork.Listener(ctx, a.Name); err == nil {
					err = prefork.ServeHTTP(ctx, ln, helloServer(a.Name))
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	return errors.Join(<-errs, <-errs)
}

func helloServer(name string) *http.Server {
	return &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d addr=%s\n", prefork.WorkerID(), os.Getpid(), prefork.Generation(), name)
	})}
}

// echo answers each datagram with who read it, until the drain.
func echo(ctx context.Context, pc net.PacketConn) error {
	buf := make([]byte, 2048)
	reply := fmt.Appendf(nil, "worker=%d pid=%d gen=%d", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		pc.WriteTo(reply, from)
	}
}

// boundAddr waits for the parent's log line that says where address name
// is bound.
func boundAddr(t *testing.T, c *testCluster, name string) string {
	t.Helper()
	rec := c.awaitLog(10*time.Second, "the address "+name, func(r logRecord) bool {
		return r.str("msg") == "listening" && (r.str("name") == name || name == "" && r.str("name") == "")
	})
	return rec.str("addr")
}

// awaitGenGone waits for the exits of generation gen's two workers, which
// drain after a reload: until then, either generation may answer.
func awaitGenGone(t *testing.T, c *testCluster, gen int) {
	t.Helper()
	for range 2 {
		c.awaitEvent(15*time.Second, fmt.Sprintf("the exit of a gen %d worker", gen), prefork.EventExit, func(o observation) bool { return o.Worker.Gen == gen })
	}
}

// udpAsk sends one datagram and returns the answer.
func udpAsk(addr string, timeout time.Duration) (answer, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("hi")); err != nil {
		return answer{}, err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer("Hello from " + string(buf[:n]))
}

// A UDP cluster: both workers answer (each datagram's 4-tuple is hashed to
// a slot), and a reload under a datagram loop keeps answering, the new
// generation after it.
func TestUDPCluster(t *testing.T) {
	t.Parallel()
	c := startHelper(t, helperSpec{helper: "multi"}, "-addrs", "main=udp:127.0.0.1:0")
	addr, _ := c.ready()
	seen := map[int]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		if a, err := udpAsk(addr, time.Second); err == nil {
			seen[a.worker] = true
		}
	}
	if len(seen) < 2 {
		t.Fatalf("workers that answered datagrams: %v, want both", seen)
	}
	stop := make(chan struct{})
	type tally struct {
		ok, lost int
		gens     map[int]int
	}
	res := make(chan tally, 1)
	go func() {
		tl := tally{gens: map[int]int{}}
		for {
			select {
			case <-stop:
				res <- tl
				return
			default:
			}
			if a, err := udpAsk(addr, 500*time.Millisecond); err != nil {
				tl.lost++
			} else {
				tl.ok++
				tl.gens[a.gen]++
			}
		}
	}()
	for gen := 2; gen <= 4; gen++ {
		c.reload(gen, nil)
	}
	awaitGenGone(t, c, 3)
	a, err := udpAsk(addr, 2*time.Second)
	close(stop)
	tl := <-res
	t.Logf("datagrams through 3 reloads: %d answered (by generation %v), %d unanswered", tl.ok, tl.gens, tl.lost)
	if err != nil || a.gen < 4 {
		t.Errorf("after the reloads: %+v, %v; want generation 4 answering", a, err)
	}
	if tl.gens[4] == 0 && a.gen != 4 {
		t.Error("generation 4 answered nothing")
	}
	c.stopAndCheck()
}

// Two TCP addresses and a UDP one in one cluster: every worker serves each.
func TestSeveralAddresses(t *testing.T) {
	t.Parallel()
	c := startHelper(t, helperSpec{helper: "multi"}, "-addrs", "web=tcp:127.0.0.1:0,admin=tcp:127.0.0.1:0,dns=udp:127.0.0.1:0")
	web, _ := c.ready()
	admin, dns := boundAddr(t, c, "admin"), boundAddr(t, c, "dns")
	for _, tc := range []struct{ name, addr string }{{"web", web}, {"admin", admin}} {
		workers := map[int]bool{}
		for i := 0; i < 200 && len(workers) < 2; i++ {
			body, err := fetch(tc.addr, "/", 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(strings.TrimSpace(body), "addr="+tc.name) {
				t.Fatalf("%s answered %q", tc.name, body)
			}
			a, _ := parseAnswer(body)
			workers[a.worker] = true
		}
		if len(workers) < 2 {
			t.Errorf("address %s: workers %v answered, want both", tc.name, workers)
		}
	}
	if _, err := udpAsk(dns, time.Second); err != nil {
		t.Errorf("the udp address: %v", err)
	}
	c.reload(2, nil)
	awaitGenGone(t, c, 1)
	if a, err := get(admin, "/", 5*time.Second); err != nil || a.gen != 2 {
		t.Errorf("admin after the reload: %+v, %v", a, err)
	}
	c.stopAndCheck()
}

// A unix socket, behind a proxy: the parent creates it with the
// permissions asked for and replaces a stale file; it survives the
// workers' drains (a reload), and is removed when the cluster stops.
func TestUnixSocketLifecycle(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "web.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // a socket file nothing listens on, as a crashed parent leaves it
	c := startHelper(t, helperSpec{helper: "multi"}, "-addrs", "web=unix:"+path, "-perm", "0600")
	c.ready()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket file: %v, %v; want a socket with mode 0600", fi, err)
	}
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	ask := func() (answer, error) {
		resp, err := client.Get("http://web/")
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return answer{}, err
		}
		return parseAnswer(string(b))
	}
	if _, err := ask(); err != nil {
		t.Fatal(err)
	}
	c.reload(2, nil)
	awaitGenGone(t, c, 1)
	if a, err := ask(); err != nil || a.gen != 2 {
		t.Errorf("after the reload (a drained worker must not remove the path): %+v, %v", a, err)
	}
	second := startHelper(t, helperSpec{helper: "multi"}, "-addrs", "web=unix:"+path)
	if code := second.wait(10 * time.Second); code == 0 {
		t.Error("a second cluster took over a served unix socket")
	}
	c.stopAndCheck()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is still there after the stop: %v", err)
	}
}
