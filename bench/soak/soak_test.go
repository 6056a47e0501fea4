package main

import (
	"maps"
	"net"
	"os"
	"testing"
	"time"
)

func TestParseSlog(t *testing.T) {
	kv := parseSlog(`time=2026-01-01T00:00:00Z level=INFO msg="cluster ready" workers=2 gen=1 err="a \"quoted\" b"`)
	want := map[string]string{"level": "INFO", "msg": "cluster ready", "workers": "2", "gen": "1", "err": `a "quoted" b`}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q", k, kv[k], v)
		}
	}
}

// feed gives the tracker lines one millisecond apart from t0.
func feed(tr *tracker, t0 time.Time, lines ...string) {
	for i, s := range lines {
		kv := parseSlog(s)
		tr.add(logLine{at: t0.Add(time.Duration(i) * time.Millisecond), text: s, msg: kv["msg"], kv: kv})
	}
}

func TestTrackerSettles(t *testing.T) {
	tr, t0 := newTracker(), time.Now()
	feed(tr, t0,
		`level=INFO msg=listening addr=127.0.0.1:1 mode=reuseport workers=2`,
		`level=DEBUG msg=fork worker=1 pid=11 gen=1`,
		`level=DEBUG msg=fork worker=2 pid=12 gen=1`,
		`level=DEBUG msg=listening worker=1 pid=11 gen=1 addr=127.0.0.1:1`,
		`level=DEBUG msg=listening worker=2 pid=12 gen=1 addr=127.0.0.1:1`,
		`level=INFO msg="cluster ready" workers=2 gen=1 addr=127.0.0.1:1`,
		`level=WARN msg="worker died, replacing it" worker=1 pid=11 gen=1 status="signal: killed"`,
		`level=DEBUG msg=listening worker=1 pid=13 gen=1 addr=127.0.0.1:1`,
		`level=INFO msg=reloading gen=2 exe=/x`,
		`level=DEBUG msg=listening worker=1 pid=14 gen=2 addr=127.0.0.1:1`,
		`level=DEBUG msg=listening worker=2 pid=15 gen=2 addr=127.0.0.1:1`,
		`level=INFO msg=reloaded gen=2`,
		`level=INFO msg=reloading gen=3 exe=/x`,
	)
	if !tr.settled[5] {
		t.Fatal("not settled after cluster ready")
	}
	if tr.settled[6] || !tr.settled[7] || tr.settled[8] {
		t.Errorf("settled after kill/replacement/reloading = %v %v %v", tr.settled[6], tr.settled[7], tr.settled[8])
	}
	// "reloaded" followed at once by a queued "reloading" is not settled.
	if _, ok := tr.settledFrom(8, t0); ok {
		t.Error("settled while a queued reload runs")
	}
	if got := tr.servingSlots(); got[1] != 14 || got[2] != 15 {
		t.Errorf("serving %v, want gen 2's 14 and 15", got)
	}
}

func TestJudge(t *testing.T) {
	t0 := time.Now()
	s := &soak{cfg: config{timeout: time.Second}}
	kill := &fault{at: t0, killAt: t0.Add(time.Millisecond), kind: faultKill, ack: -1, held: map[int]bool{5000: true}, ended: true, end: t0.Add(100 * time.Millisecond)}
	hup := &fault{at: t0.Add(2 * time.Second), kind: faultHUP, ack: -1, ended: true, end: t0.Add(2100 * time.Millisecond)}
	s.faults = []*fault{kill, hup}
	cases := []struct {
		name    string
		f       failure
		allowed bool
		blamed  *fault
	}{
		{"held connection", failure{at: t0.Add(2 * time.Millisecond), port: 5000, dialed: t0.Add(-time.Second)}, true, kill},
		{"queued connection", failure{at: t0.Add(2 * time.Millisecond), port: 5001, dialed: t0}, false, kill},
		{"port reused after the kill", failure{at: t0.Add(50 * time.Millisecond), port: 5000, dialed: t0.Add(10 * time.Millisecond)}, false, kill},
		{"reload", failure{at: t0.Add(2050 * time.Millisecond), port: 5000}, false, hup},
		{"steady state", failure{at: t0.Add(1500 * time.Millisecond)}, false, nil},
	}
	for _, c := range cases {
		v := s.judge(c.f)
		if v.allowed != c.allowed || v.fault != c.blamed {
			t.Errorf("%s: allowed %v blamed %v (%s), want %v %v", c.name, v.allowed, v.fault, v.reason, c.allowed, c.blamed)
		}
	}
}

// TestHeldConns: the connections this process accepted are found, by
// sock_diag and by /proc/net/tcp alike, with their client ports.
func TestHeldConns(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	want := map[int]bool{}
	for range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		want[c.LocalAddr().(*net.TCPAddr).Port] = true
	}
	held, how, err := heldConns(os.Getpid(), port)
	if err != nil || how != "sock_diag" || !maps.Equal(held, want) {
		t.Errorf("heldConns = %v, %s, %v; want %v by sock_diag", held, how, err, want)
	}
	d, _, err1 := diagConns(port)
	p, _, err2 := procConns(port)
	if err1 != nil || err2 != nil || !maps.Equal(d, p) {
		t.Errorf("sock_diag %v (%v) and /proc/net/tcp %v (%v) differ", d, err1, p, err2)
	}
}
