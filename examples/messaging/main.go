// Command messaging is the Node.js cluster documentation's classic, in Go:
// workers count the requests they serve, the parent adds the counts up and
// broadcasts the cluster-wide total back to every worker. It also shows a
// request/response round trip: GET /stats asks the parent for the
// per-worker counts and waits for the answer.
//
//	go run ./examples/messaging -workers 2
//	curl http://127.0.0.1:8080/        # worker 1: 3 requests here, 7 in the cluster
//	curl http://127.0.0.1:8080/stats   # {"1":4,"2":3}
//
// Workers report once a second rather than once per request: a message is
// cheap (no allocation to send, about ten microseconds for a round trip),
// but the request path is no place for one.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/forkline/forkline/prefork"
)

// report is what a worker tells the parent, and total what the parent
// broadcasts.
type (
	report struct{ Served int64 }
	total  struct{ Served int64 }
)

func main() {
	var cfg prefork.Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address to serve on")
	flag.IntVar(&cfg.Workers, "workers", 0, "worker processes (0: one per CPU)")
	flag.Parse()

	var c *prefork.Cluster

	// Parent side: the counts by worker, and the cluster total.
	var mu sync.Mutex
	counts := make(map[int]int64)

	// Worker side: what this worker served, and the last total it heard.
	var served, clusterTotal atomic.Int64

	cfg.OnMessage = func(m prefork.Message) {
		if !prefork.IsWorker() { // a worker's report
			var r report
			if m.Decode(&r) != nil {
				return
			}
			mu.Lock()
			counts[m.From] = r.Served
			var sum int64
			for _, n := range counts {
				sum += n
			}
			mu.Unlock()
			c.SendJSON(prefork.All, total{Served: sum})
			return
		}
		var t total // the parent's broadcast
		if m.Decode(&t) == nil {
			clusterTotal.Store(t.Served)
		}
	}
	cfg.OnRequest = func(m prefork.Message) ([]byte, error) {
		mu.Lock() // only the parent gets requests here
		defer mu.Unlock()
		byID := make(map[string]int64, len(counts))
		for id, n := range counts {
			byID[strconv.Itoa(id)] = n
		}
		return json.Marshal(byID)
	}
	c = prefork.New(cfg)

	if prefork.IsWorker() {
		go func() { // report once a second; ends with the process
			for range time.Tick(time.Second) {
				c.SendJSON(prefork.Parent, report{Served: served.Load()})
			}
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		fmt.Fprintf(w, "worker %d: %d requests here, %d in the cluster\n", prefork.WorkerID(), n, max(clusterTotal.Load(), n))
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		stats, err := c.Request(ctx, prefork.Parent, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(stats, '\n'))
	})
	if err := c.Run(mux); err != nil {
		log.Fatal(err)
	}
}
