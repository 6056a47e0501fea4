// Package metrics exports a forkline cluster's [prefork.Stats] as
// Prometheus metrics, from the parent: one scrape sees every worker.
//
//	c := prefork.New(cfg)
//	if !prefork.IsWorker() {
//		srv := &http.Server{Addr: "127.0.0.1:8081", Handler: metrics.Handler(c)}
//		// ... serve it until c.Run returns, then srv.Shutdown
//	}
//	err := c.Run(handler)
//
// Serve the metrics from the parent only, on an address of their own: a
// worker sees itself alone (its Collect fails with prefork.ErrNotParent),
// and a scrape on the served address would be answered by whichever worker
// the kernel picked. examples/metrics is a whole program that does so,
// its metrics server and its cluster two actors of one run.Group.
//
// # Metrics
//
// Slots are labelled by their id (worker="1"), never by process id: a
// slot's series go on across its workers' crashes and reloads, and its
// counters cover every worker it has had.
//
//	forkline_workers{state}                       gauge    live worker processes by state
//	forkline_slots                                gauge    slots wanted (Config.Workers, as scaled)
//	forkline_generation                           gauge    serving generation
//	forkline_reloads_total{result="ok"|"failed"}  counter  reloads
//	forkline_messages_relayed_total               counter  worker-to-worker messages relayed
//	forkline_messages_dropped_total               counter  relayed messages not delivered
//	forkline_worker_restarts_total{worker}        counter  workers started in the slot after one died
//	forkline_worker_requests_total{worker}        counter  requests (Serve: connections) served
//	forkline_worker_cpu_seconds_total{worker}     counter  user and system CPU time
//	forkline_worker_resident_memory_bytes{worker} gauge    RSS of the slot's serving worker
//	forkline_worker_eligible{worker}              gauge    1 while the kernel may give the slot a connection
//	forkline_worker_listen_queue{worker}          gauge    connections waiting in the slot's accept queue
//	forkline_worker_listen_queue_limit{worker}    gauge    that queue's limit (the backlog)
//
// A value forkline does not know is left out rather than reported as a
// number: the memory of a slot with no serving worker (or where it cannot
// be read), the accept queue outside Linux or in inherit mode.
//
// # Why a module of its own
//
// This package is the module github.com/forkline/forkline/metrics, so that
// the core module does not depend on the Prometheus client library and its
// dependencies (eight modules, about 4 MB more in a binary): a program
// that does not export metrics does not build them.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/forkline/forkline/prefork"
)

// statsTimeout bounds the snapshot each Collect takes. Stats itself waits
// at most 250 ms for a worker's count; the rest is margin for the parent's
// loop. It is well under Prometheus's default scrape timeout (10 s).
const statsTimeout = time.Second

// states are the states a live worker process can be in, each reported
// (as 0 when no worker is in it) so that a state's series does not vanish
// and reappear. StateDead is not one: Stats lists only live processes.
var states = []prefork.WorkerState{prefork.StateStarting, prefork.StateOnline, prefork.StateListening,
	prefork.StateDraining, prefork.StateDisconnected}

type collector struct {
	c *prefork.Cluster

	workers, slots, generation, reloads, relayed, dropped *prometheus.Desc
	restarts, requests, cpu, rss, eligible, queue, limit  *prometheus.Desc
}

// NewCollector returns a collector of c's metrics (see the package
// documentation for the list). Each Collect takes one snapshot with
// c.Stats, under a one-second context, so a scrape's metrics are consistent
// with one another. It must run in the parent.
//
// While c does not run (before Run or Serve, after it returns) Collect
// reports nothing: there is no cluster to describe, and a metrics server
// that outlives it by a moment is not failing. Any other failure of Stats
// (such as ErrNotParent, in a worker) is reported as an invalid
// metric, which fails the scrape (promhttp answers 500 and Prometheus marks
// the target down): better than metrics made up or half missing.
//
// The collector may be registered in any registry and collected
// concurrently; it keeps no state of its own.
func NewCollector(c *prefork.Cluster) prometheus.Collector {
	slot := []string{"worker"}
	return &collector{
		c:          c,
		workers:    prometheus.NewDesc("forkline_workers", "Live worker processes, by state (a reload's new workers and the old ones it drains included).", []string{"state"}, nil),
		slots:      prometheus.NewDesc("forkline_slots", "Worker slots the cluster wants (Config.Workers, as scaled).", nil, nil),
		generation: prometheus.NewDesc("forkline_generation", "The serving generation: 1 at start, one more for each reload that served.", nil, nil),
		reloads:    prometheus.NewDesc("forkline_reloads_total", "Reloads, by result: ok (the new generation serves) or failed (the old one served on).", []string{"result"}, nil),
		relayed:    prometheus.NewDesc("forkline_messages_relayed_total", "Worker-to-worker messages the parent relayed.", nil, nil),
		dropped:    prometheus.NewDesc("forkline_messages_dropped_total", "Relayed messages the parent could not deliver.", nil, nil),
		restarts:   prometheus.NewDesc("forkline_worker_restarts_total", "Workers started in the slot after one died.", slot, nil),
		requests:   prometheus.NewDesc("forkline_worker_requests_total", "Requests served by the slot's workers (connections accepted, for Serve), as each last said.", slot, nil),
		cpu:        prometheus.NewDesc("forkline_worker_cpu_seconds_total", "User and system CPU time of the slot's workers, the exited ones included.", slot, nil),
		rss:        prometheus.NewDesc("forkline_worker_resident_memory_bytes", "Resident memory of the slot's serving worker.", slot, nil),
		eligible:   prometheus.NewDesc("forkline_worker_eligible", "1 while the kernel may give the slot's socket a new connection and its worker accepts, else 0.", slot, nil),
		queue:      prometheus.NewDesc("forkline_worker_listen_queue", "Connections waiting in the accept queue of the slot's socket.", slot, nil),
		limit:      prometheus.NewDesc("forkline_worker_listen_queue_limit", "The limit (backlog) of the accept queue of the slot's socket.", slot, nil),
	}
}

// Describe sends every descriptor Collect may use.
func (co *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{co.workers, co.slots, co.generation, co.reloads, co.relayed, co.dropped,
		co.restarts, co.requests, co.cpu, co.rss, co.eligible, co.queue, co.limit} {
		ch <- d
	}
}

// Collect takes one snapshot of the cluster and sends its metrics.
func (co *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	st, err := co.c.Stats(ctx)
	switch {
	case errors.Is(err, prefork.ErrNotRunning), errors.Is(err, prefork.ErrServerClosed):
		return // not started, or stopped (ErrServerClosed: its loop has ended, Run is returning)
	case err != nil:
		ch <- prometheus.NewInvalidMetric(co.generation, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	byState := map[prefork.WorkerState]int{}
	rss := map[int]int64{} // by pid
	for _, p := range st.Processes {
		byState[p.State]++
		rss[p.PID] = p.RSS
	}
	for _, s := range states {
		gauge(co.workers, float64(byState[s]), s.String())
	}
	gauge(co.slots, float64(st.Workers))
	gauge(co.generation, float64(st.Generation))
	counter(co.reloads, float64(st.ReloadsOK), "ok")
	counter(co.reloads, float64(st.ReloadsFailed), "failed")
	counter(co.relayed, float64(st.MessagesRelayed))
	counter(co.dropped, float64(st.MessagesDropped))

	for _, sl := range st.Slots {
		id := strconv.Itoa(sl.ID)
		counter(co.restarts, float64(sl.Restarts), id)
		counter(co.requests, float64(sl.Requests), id)
		counter(co.cpu, sl.CPU.Seconds(), id)
		eligible := 0.0
		if sl.Eligible {
			eligible = 1
		}
		gauge(co.eligible, eligible, id)
		if m, ok := rss[sl.PID]; ok && m >= 0 { // no pid 0 in rss: a slot without a worker has none
			gauge(co.rss, float64(m), id)
		}
		if sl.Queue >= 0 {
			gauge(co.queue, float64(sl.Queue), id)
		}
		if sl.Backlog >= 0 {
			gauge(co.limit, float64(sl.Backlog), id)
		}
	}
}

// Handler returns a handler that serves c's metrics (NewCollector) with
// those of the parent process itself: its Go runtime's (go_*) and its
// process's (process_*), as promhttp.Handler does for the default
// registry. They are gathered from a registry of their own, so that the
// handler serves neither more nor less wherever it is mounted; a program
// that has its own registry registers NewCollector(c) in it instead. A
// scrape whose snapshot fails is answered with status 500 (see
// NewCollector).
func Handler(c *prefork.Cluster) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(c), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
