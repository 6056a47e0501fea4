package prefork_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/forkline/forkline/prefork"
)

// stats takes a snapshot of ip's cluster.
func (ip *inProcess) stats() prefork.Stats {
	ip.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ip.c.Stats(ctx)
	if err != nil {
		ip.t.Fatalf("Stats: %v", err)
	}
	return st
}

func slotOf(t *testing.T, st prefork.Stats, id int) prefork.SlotStats {
	t.Helper()
	for _, sl := range st.Slots {
		if sl.ID == id {
			return sl
		}
	}
	t.Fatalf("no slot %d in %+v", id, st.Slots)
	return prefork.SlotStats{}
}

// TestStats: the counters count what happened (requests, a crash, a
// reload), a slot's counters survive its worker, and a stopped worker's
// queue shows in its slot.
func TestStats(t *testing.T) {
	t.Parallel()
	ip := startInProcessWith(t, inProcessSpec{workers: 2, steering: prefork.SteerOff})
	const n = 40
	for range n {
		mustGet(t, ip.addr)
	}
	st := ip.stats()
	var served int64
	for _, sl := range st.Slots {
		served += sl.Requests
	}
	if served != n || len(st.Slots) != 2 || st.Workers != 2 || st.Generation != 1 {
		t.Fatalf("after %d requests: %+v", n, st)
	}
	for _, p := range st.Processes {
		if p.RSS <= 0 || p.Requests < 0 || p.State != prefork.StateListening {
			t.Errorf("process %+v", p)
		}
	}
	before := slotOf(t, st, 1)

	// A crash: the slot's counters carry over to its next worker.
	old := pidOf(t, ip, 1)
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ip.event(20*time.Second, "the replacement listening", func(ev prefork.Event) bool {
		return ev.Type == prefork.EventListening && ev.Worker.ID == 1 && ev.Worker.PID != old
	})
	st = ip.stats()
	after := slotOf(t, st, 1)
	if after.Restarts != 1 || st.Respawns != 1 || after.Requests < before.Requests || after.CPU < before.CPU || after.PID == old {
		t.Errorf("slot 1 before the crash %+v, after %+v (respawns %d)", before, after, st.Respawns)
	}

	// A reload.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ip.c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st = ip.stats(); st.ReloadsOK != 1 || st.ReloadsFailed != 0 || st.Generation != 2 {
		t.Errorf("after a reload: ok %d failed %d gen %d", st.ReloadsOK, st.ReloadsFailed, st.Generation)
	}

	// A stopped worker's connections wait in its slot's queue; Stats
	// reports them (and the stopped worker's count as unknown).
	stopped := pidOf(t, ip, 2)
	if err := syscall.Kill(stopped, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(stopped, syscall.SIGCONT)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for q := 0; q < 3; q = slotOf(t, ip.stats(), 2).Queue {
		if len(conns) == 200 {
			t.Fatalf("200 connections, slot 2's queue says %d", q)
		}
		c, err := net.Dial("tcp", ip.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	sl := slotOf(t, ip.stats(), 2)
	if sl.Backlog <= 0 {
		t.Errorf("slot 2: backlog %d", sl.Backlog)
	}
	for _, p := range ip.stats().Processes {
		if p.PID == stopped && p.Requests != -1 {
			t.Errorf("a stopped worker said it served %d", p.Requests)
		}
	}
	syscall.Kill(stopped, syscall.SIGCONT)
}
