package prefork_test

import (
	"syscall"
	"testing"
	"time"
)

// SIGTTIN adds a worker with the next id and its own socket; SIGTTOU
// removes it again; requests keep being answered throughout.
func TestScaleWithSignals(t *testing.T) {
	c := startCluster(t, "-workers", "2")
	addr, _ := c.ready()

	c.signal(syscall.SIGTTIN)
	c.waitFor(10*time.Second, "scaling up to 3", func(r logRecord) bool { return r.Msg == "scaling up" && r.Worker == 3 })
	rec := c.waitFor(10*time.Second, "worker 3 listening", func(r logRecord) bool { return r.Msg == "listening" && r.Worker == 3 })
	seen := make(map[int]int)
	for range 600 {
		h, err := get(addr, "/", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.worker]++
	}
	t.Logf("requests per worker with 3 workers: %v", seen)
	if seen[3] == 0 {
		t.Errorf("the new worker served nothing: %v", seen)
	}

	c.signal(syscall.SIGTTOU)
	c.waitFor(10*time.Second, "scaling down from 3", func(r logRecord) bool { return r.Msg == "scaling down" && r.Worker == 3 })
	c.waitFor(10*time.Second, "exit of worker 3", func(r logRecord) bool { return r.Msg == "exit" && r.PID == rec.PID })
	for range 300 {
		h, err := get(addr, "/", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if h.worker == 3 {
			t.Fatalf("worker 3 answered after the scale-down")
		}
	}
	c.stopAndCheck()
}

// A worker that stops answering heartbeats (SIGSTOP) is killed and
// replaced on the same slot.
func TestHungWorkerReplaced(t *testing.T) {
	c := startCluster(t, "-workers", "2", "-heartbeat-timeout", "500ms")
	addr, pids := c.ready()
	if err := syscall.Kill(pids[1], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.waitFor(10*time.Second, "missed heartbeat", func(r logRecord) bool {
		return r.Msg == "worker missed its heartbeat, replacing it" && r.PID == pids[1]
	})
	rec := c.waitFor(10*time.Second, "replacement of worker 1", func(r logRecord) bool {
		return r.Msg == "listening" && r.Worker == 1 && r.PID != pids[1]
	})
	if !waitProcessGone(t, pids[1], 5*time.Second) {
		t.Errorf("hung worker %d still alive", pids[1])
	}
	seen := make(map[int]bool)
	for range 200 {
		h, err := get(addr, "/", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen[h.pid] = true
	}
	if !seen[rec.PID] {
		t.Errorf("the replacement (pid %d) served nothing: %v", rec.PID, seen)
	}
}

// MaxRequests recycles each worker once it has served its budget: the
// replacement is ready before the old worker drains, and no request fails.
func TestMaxRequestsRecycles(t *testing.T) {
	c := startCluster(t, "-workers", "2", "-max-requests", "100", "-max-requests-jitter", "20")
	addr, pids := c.ready()
	load := startLoad(addr, 8, 600)
	for id := 1; id <= 2; id++ {
		c.waitFor(30*time.Second, "recycle of the first workers", func(r logRecord) bool {
			return r.Msg == "recycled" && (pids[r.Worker] != 0 && r.PID != pids[r.Worker])
		})
	}
	load.await(t, 600, 30*time.Second)
	ok, failed, errs := load.finish()
	t.Logf("requests ok %d, failed %d", ok, failed)
	if failed > 0 {
		t.Errorf("%d requests failed during recycling: %v", failed, errs)
	}
	for id, pid := range pids {
		if !waitProcessGone(t, pid, 10*time.Second) {
			t.Errorf("recycled worker %d (pid %d) still alive", id, pid)
		}
	}
}
