// Command server is the steer suite's server: forkline + net/http, like
// examples/hello, with the faults the suite needs on a control FIFO.
//
//	server -addr A -workers N -steering auto|off|required -control FIFO [-crash-marker FILE]
//
// The parent reads lines from the FIFO: "disconnect ID" (Cluster.Disconnect)
// and "workers N" (SetWorkers). A worker of slot 2 panics at start while
// FILE exists: the slot crash-loops, backing off. Each answer is
// "Hello from worker=<id> pid=<pid> gen=<gen>".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/forkline/forkline/prefork"
)

func main() {
	var cfg prefork.Config
	fs := flagSet(&cfg)
	control := fs.String("control", "", "FIFO of commands for the parent")
	marker := fs.String("crash-marker", "", "while this file exists, slot 2's workers panic at start")
	fs.Parse(os.Args[1:])
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	if prefork.IsWorker() && prefork.WorkerID() == 2 && *marker != "" {
		if _, err := os.Stat(*marker); err == nil {
			panic("slot 2 crashes at start (crash marker present)")
		}
	}
	c := prefork.New(cfg)
	if !prefork.IsWorker() && *control != "" {
		go commands(c, *control) // ends with the process
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from worker=%d pid=%d gen=%d\n", prefork.WorkerID(), os.Getpid(), prefork.Generation())
	})
	if err := c.Run(h); err != nil {
		log.Fatal(err)
	}
}

func flagSet(cfg *prefork.Config) *flag.FlagSet {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address")
	fs.IntVar(&cfg.Workers, "workers", 2, "workers")
	fs.TextVar(&cfg.Steering, "steering", prefork.SteerAuto, "auto, off or required")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", 2*time.Second, "how long a draining worker may take")
	return fs
}

// commands applies the FIFO's lines until it is gone.
func commands(c *prefork.Cluster, path string) {
	for {
		f, err := os.Open(path) // blocks until a writer opens it
		if err != nil {
			return
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) != 2 {
				continue
			}
			n, _ := strconv.Atoi(fields[1])
			switch fields[0] {
			case "disconnect":
				err = c.Disconnect(n)
			case "workers":
				err = c.SetWorkers(n)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "server: command", sc.Text(), "failed:", err)
			}
		}
		f.Close()
	}
}
