package prefork_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// Serving the user's own http.Server: TLS with HTTP/2, h2c, timeouts, and
// idle or slow clients against a drain.

// webFlags are the hello helper's ways to serve HTTP.
type webFlags struct {
	certFile, keyFile string
	h2c               bool
	readHeaderTimeout time.Duration
}

func (f webFlags) serve(c *prefork.Cluster, mux http.Handler) error {
	switch {
	case f.certFile != "":
		return c.RunServerTLS(&http.Server{Handler: mux}, f.certFile, f.keyFile)
	case f.h2c:
		srv := &http.Server{Handler: mux, Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		return c.RunServer(srv)
	case f.readHeaderTimeout > 0:
		return c.RunServer(&http.Server{Handler: mux, ReadHeaderTimeout: f.readHeaderTimeout})
	}
	return c.Run(mux)
}

// selfSigned writes a certificate for 127.0.0.1 and its key; it returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forkline test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// h2Load runs n clients, each with a Transport of its own (its own
// connection), in a GET loop until stop; it counts answers by generation
// and failures.
type h2Load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	gens       map[int]int
	errs       []string
	grew       chan struct{} // closed and replaced at every answer
	wg         sync.WaitGroup
	stop       chan struct{}
}

func startH2Load(url string, n int, tr func() *http.Transport) *h2Load {
	l := &h2Load{gens: map[int]int{}, stop: make(chan struct{}), grew: make(chan struct{})}
	for range n {
		l.wg.Go(func() {
			c := &http.Client{Transport: tr(), Timeout: 10 * time.Second}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.one(c, url)
			}
		})
	}
	return l
}

func (l *h2Load) one(c *http.Client, url string) {
	resp, err := c.Get(url)
	if err == nil && resp.ProtoMajor != 2 {
		err = fmt.Errorf("answered over %s, want HTTP/2", resp.Proto)
	}
	var a answer
	if err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if a, err = parseAnswer(string(body)); rerr != nil {
			err = rerr
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed.Add(1)
		if len(l.errs) < 10 {
			l.errs = append(l.errs, err.Error())
		}
		return
	}
	l.ok.Add(1)
	l.gens[a.gen]++
	close(l.grew)
	l.grew = make(chan struct{})
}

// awaitGen waits until generation gen has given n answers.
func (l *h2Load) awaitGen(t *testing.T, gen, n int) {
	t.Helper()
	watchdog := time.NewTimer(10 * time.Second)
	defer watchdog.Stop()
	for {
		l.mu.Lock()
		got, grew := l.gens[gen], l.grew
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-grew:
		case <-watchdog.C:
			t.Fatalf("generation %d gave %d of %d answers in 10 s (failed %d: %v)", gen, got, n, l.failed.Load(), l.errs)
		}
	}
}

func (l *h2Load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// reloadUnderH2 reloads 10 times under l, each new generation serving
// before the next reload, and checks that no request failed.
func reloadUnderH2(t *testing.T, c *testCluster, l *h2Load) {
	t.Helper()
	for gen := 2; gen <= 11; gen++ {
		c.reload(gen, nil)
		l.awaitGen(t, gen, 50) // the next reload once this generation serves
	}
	l.finish()
	t.Logf("%d requests over HTTP/2 through 10 reloads, %d failed; by generation %v", l.ok.Load(), l.failed.Load(), l.gens)
	if l.failed.Load() > 0 {
		t.Errorf("%d requests failed: %v", l.failed.Load(), l.errs)
	}
}

// HTTPS with HTTP/2 from RunServerTLS, drained through 10 reloads under
// 8 clients, each on a connection of its own: no request fails (a draining
// worker's connections get a GOAWAY).
func TestTLSHTTP2UnderReloads(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	c := startCluster(t, "-workers", "2", "-tls-cert", certFile, "-tls-key", keyFile)
	addr, _ := c.ready()
	l := startH2Load("https://"+addr+"/", 8, func() *http.Transport {
		return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	})
	l.awaitGen(t, 1, 100)
	reloadUnderH2(t, c, l)
	c.stopAndCheck()
}

// HTTP/2 without TLS (h2c), through 10 reloads.
func TestH2CUnderReloads(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2", "-h2c")
	addr, _ := c.ready()
	l := startH2Load("http://"+addr+"/", 8, func() *http.Transport {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		return tr
	})
	l.awaitGen(t, 1, 100)
	reloadUnderH2(t, c, l)
	c.stopAndCheck()
}

// 200 connections that send nothing, or half a request, do not hold a
// reload: the old workers exit cleanly within the idle grace (1 s) of the
// reload's commit, not at their stop timeout (10 s), and the slow clients'
// connections are closed.
func TestSlowClientsDoNotHoldADrain(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "2")
	addr, pids := c.ready()
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	for i := range 200 {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			io.WriteString(conn, "GET / HTTP/1.1\r\nHost: slow\r\n") // never the empty line
		}
		conns = append(conns, conn)
	}
	mustGet(t, addr) // a real client still gets through
	c.signal(syscall.SIGHUP)
	c.awaitEvent(30*time.Second, "the reload", prefork.EventReloaded, nil)
	committed := time.Now()
	for range pids {
		o := c.awaitEvent(15*time.Second, "an old worker's exit", prefork.EventExit, func(o observation) bool { return o.Worker.Gen == 1 })
		if !o.cleanExit() {
			t.Errorf("old worker %d exited with code %d signal %d: it was killed, not drained", o.Worker.PID, o.ExitCode, o.Signal)
		}
	}
	took := time.Since(committed)
	t.Logf("the old generation was gone %v after the reload's commit, with 200 slow clients", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("the old generation took %v to drain with slow clients, want about the 1 s grace", took)
	}
	closed := 0
	for _, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 512)); err != nil && !isTimeout(err) {
			closed++
		}
	}
	if closed < len(conns)*9/10 {
		t.Errorf("%d of %d slow connections were closed, want all but those that reached the new generation", closed, len(conns))
	}
	c.stopAndCheck()
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// RunServer honours the user's own timeouts: a client that sends half a
// request is cut at ReadHeaderTimeout.
func TestCustomTimeoutHonoured(t *testing.T) {
	t.Parallel()
	c := startCluster(t, "-workers", "1", "-read-header-timeout", "300ms")
	addr, _ := c.ready()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: slow\r\n")
	start := time.Now()
	conn.SetReadDeadline(start.Add(10 * time.Second)) // a watchdog
	b, err := io.ReadAll(conn)
	took := time.Since(start)
	t.Logf("the half request was cut after %v: %q, %v", took.Round(time.Millisecond), strings.SplitN(string(b), "\r\n", 2)[0], err)
	if isTimeout(err) || took < 250*time.Millisecond {
		t.Errorf("the server cut a half request after %v (err %v), want at its ReadHeaderTimeout of 300ms", took, err)
	}
	c.stopAndCheck()
}
