package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/forkline/forkline/internal/control"
)

func cmdStatus(cl *cli, args []string) int {
	fs := cl.flags()
	asJSON := fs.Bool("json", false, "print the status as JSON, as the socket answers it")
	if _, code, ok := cl.parse(fs, args, 0, 0); !ok {
		return code
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	line, err := c.Do(cl.ctx, control.Request{Cmd: "status"})
	if err != nil {
		return cl.fail(err)
	}
	var a struct {
		Status json.RawMessage `json:"status"`
	}
	var st control.Status
	if err := json.Unmarshal(line, &a); err != nil || json.Unmarshal(a.Status, &st) != nil {
		return cl.fail(fmt.Errorf("malformed answer: %s", line))
	}
	if *asJSON {
		fmt.Fprintf(cl.stdout, "%s\n", a.Status)
		return exitOK
	}
	printStatus(cl.stdout, st, time.Now())
	return exitOK
}

// printStatus writes st as a line about the cluster and a table of its
// workers, as pm2 ls does.
func printStatus(w io.Writer, st control.Status, now time.Time) {
	fmt.Fprintf(w, "parent pid %d", st.PID)
	if !st.Started.IsZero() {
		fmt.Fprintf(w, ", up %s", age(now.Sub(st.Started)))
	}
	fmt.Fprintf(w, ", generation %d, %d workers, reloads %d ok / %d failed, %d respawns",
		st.Generation, st.Workers, st.ReloadsOK, st.ReloadsFailed, st.Respawns)
	if st.MessagesRelayed > 0 || st.MessagesDropped > 0 {
		fmt.Fprintf(w, ", messages %d relayed / %d dropped", st.MessagesRelayed, st.MessagesDropped)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tCPU\tRSS\tQUEUE")
	for _, s := range st.Slots {
		pid, up := "-", "-"
		if s.PID > 0 {
			pid = strconv.Itoa(s.PID)
		}
		if !s.Started.IsZero() {
			up = age(now.Sub(s.Started))
		}
		cpu := "-"
		if s.CPU >= 0 {
			cpu = age(time.Duration(s.CPU * float64(time.Second)))
			if s.CPU < 60 {
				cpu = strconv.FormatFloat(s.CPU, 'f', 1, 64) + "s"
			}
		}
		queue := "-"
		if s.Queue >= 0 {
			queue = strconv.Itoa(s.Queue)
			if s.Backlog > 0 {
				queue += "/" + strconv.Itoa(s.Backlog)
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, pid, s.Gen, s.State, up, s.Restarts, cpu, size(s.RSS), queue)
	}
	tw.Flush()
}

// age is d in two units at most: 42s, 3m07s, 5h02m, 3d04h.
func age(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

// size is a number of bytes in binary units: 512K, 12.3M, 1.2G.
func size(b int64) string {
	switch {
	case b < 0:
		return "-"
	case b < 1<<10:
		return fmt.Sprintf("%dB", b)
	case b < 1<<20:
		return fmt.Sprintf("%dK", b>>10)
	case b < 1<<30:
		return fmt.Sprintf("%.1fM", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
}

func cmdReload(cl *cli, args []string) int {
	if _, code, ok := cl.parse(cl.flags(), args, 0, 0); !ok {
		return code
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	stop := showProgress(cl.stderr, func() string { return "reloading" })
	line, err := c.Do(cl.ctx, control.Request{Cmd: "reload"})
	stop()
	if err != nil {
		return cl.fail(fmt.Errorf("failed: %w", err))
	}
	var a struct{ Generation int }
	if json.Unmarshal(line, &a); a.Generation > 0 {
		fmt.Fprintf(cl.stdout, "reloaded: generation %d serves\n", a.Generation)
	} else {
		fmt.Fprintln(cl.stdout, "reloaded")
	}
	return exitOK
}

var count = regexp.MustCompile(`^[+-]?[0-9]+$`)

func cmdScale(cl *cli, args []string) int {
	// "-1" is the argument, not a flag, wherever it is.
	var flags, negative []string
	for i, a := range args {
		if strings.HasPrefix(a, "-") && count.MatchString(a) && (i == 0 || args[i-1] != "-socket" && args[i-1] != "--socket") {
			negative = append(negative, a)
		} else {
			flags = append(flags, a)
		}
	}
	if len(negative) > 0 {
		args = append(append(flags, "--"), negative...)
	}
	rest, code, ok := cl.parse(cl.flags(), args, 1, 1)
	if !ok {
		return code
	}
	if !count.MatchString(rest[0]) {
		fmt.Fprintf(cl.stderr, "forkline scale: %q is not N, +K or -K\n", rest[0])
		return exitUsage
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	line, err := c.Do(cl.ctx, control.Request{Cmd: "scale", N: rest[0]})
	if err != nil {
		return cl.fail(err)
	}
	var a struct{ Workers, Was int }
	json.Unmarshal(line, &a)
	fmt.Fprintf(cl.stdout, "workers: %d (was %d)\n", a.Workers, a.Was)
	return exitOK
}

func cmdKill(cl *cli, args []string) int {
	rest, code, ok := cl.parse(cl.flags(), args, 1, 2)
	if !ok {
		return code
	}
	id, err := strconv.Atoi(rest[0])
	if err != nil || id < 1 {
		fmt.Fprintf(cl.stderr, "forkline kill: %q is not a worker's ID (1 or more)\n", rest[0])
		return exitUsage
	}
	sig := "TERM"
	if len(rest) == 2 {
		sig = rest[1]
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	if _, err := c.Do(cl.ctx, control.Request{Cmd: "kill", ID: id, Signal: sig}); err != nil {
		return cl.fail(err)
	}
	fmt.Fprintf(cl.stdout, "sent %s to worker %d\n", strings.ToUpper(sig), id)
	return exitOK
}

func cmdStop(cl *cli, args []string) int {
	if _, code, ok := cl.parse(cl.flags(), args, 0, 0); !ok {
		return code
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	st, err := c.Status(cl.ctx)
	if err != nil {
		return cl.fail(err)
	}
	var left atomic.Int64
	for _, s := range st.Slots {
		if s.PID > 0 {
			left.Add(1)
		}
	}
	start := time.Now()
	stop := showProgress(cl.stderr, func() string { return fmt.Sprintf("stopping, %d workers left", left.Load()) })
	err = c.Stop(cl.ctx, func(ev control.Event) {
		if ev.Type == "exit" {
			left.Add(-1)
		}
	})
	stop()
	if err != nil {
		return cl.fail(err)
	}
	fmt.Fprintf(cl.stdout, "stopped in %s\n", time.Since(start).Round(100*time.Millisecond))
	return exitOK
}

func cmdEvents(cl *cli, args []string) int {
	fs := cl.flags()
	asJSON := fs.Bool("json", false, "print each event as a JSON line, as the socket sends it")
	if _, code, ok := cl.parse(fs, args, 0, 0); !ok {
		return code
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	defer c.Close()
	err := c.Events(cl.ctx, func(ev control.Event) {
		if *asJSON {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(cl.stdout, "%s\n", b)
			return
		}
		fmt.Fprintln(cl.stdout, eventLine(ev))
	})
	if err != nil && cl.ctx.Err() == nil {
		return cl.fail(err)
	}
	return exitOK
}

// eventLine is ev for a person: its time, type, and the fields it has.
func eventLine(ev control.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-10s", ev.Time.Local().Format("15:04:05.000"), ev.Type)
	kv := func(k string, v any, set bool) {
		if set {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	kv("worker", ev.ID, ev.ID != 0)
	kv("pid", ev.PID, ev.PID != 0)
	kv("gen", ev.Gen, ev.Gen != 0)
	kv("state", ev.State, ev.State != "")
	kv("eligible", ev.Eligible, ev.Type == "eligible")
	kv("addr", ev.Addr, ev.Addr != "")
	kv("code", ev.ExitCode, ev.Type == "exit")
	kv("signal", ev.Signal, ev.Signal != "")
	kv("asked", ev.Asked, ev.Type == "exit")
	kv("reason", strconv.Quote(ev.Reason), ev.Reason != "")
	kv("err", strconv.Quote(ev.Err), ev.Err != "")
	return b.String()
}

// progressEvery is how often a command that waits says so on w: every
// second on a terminal (a character device: /dev/null is one too, which
// loses nothing), never elsewhere, where a line a second would only fill
// a log. The tests change it.
var progressEvery = func(w io.Writer) time.Duration {
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			return time.Second
		}
	}
	return 0
}

// showProgress writes "label… 3s" on w, one line rewritten in place, from
// the first interval on, until stop is called; stop clears the line and
// returns once nothing more is written.
func showProgress(w io.Writer, label func() string) (stop func()) {
	every := progressEvery(w)
	if every <= 0 {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		shown := false
		for {
			select {
			case <-t.C:
				fmt.Fprintf(w, "\r%s… %s\033[K", label(), time.Since(start).Round(time.Second))
				shown = true
			case <-quit:
				if shown {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// cmdUpgrade asks the parent to re-execute itself in place, then waits for
// the outcome: the new parent's status says it, since the old one's
// connection ends with its image.
func cmdUpgrade(cl *cli, args []string) int {
	if _, code, ok := cl.parse(cl.flags(), args, 0, 0); !ok {
		return code
	}
	c, code := cl.dial()
	if c == nil {
		return code
	}
	before, err := c.Status(cl.ctx)
	if err != nil {
		c.Close()
		return cl.fail(err)
	}
	stop := showProgress(cl.stderr, func() string { return "upgrading" })
	defer stop()
	_, err = c.Do(cl.ctx, control.Request{Cmd: "upgrade"})
	c.Close()
	switch {
	case err == nil:
	case cl.ctx.Err() != nil:
		return cl.fail(err)
	case !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET):
		return cl.fail(fmt.Errorf("refused: %w", err)) // the cluster said why: it carries on
	}
	// The parent executes the new binary: ask it until it answers.
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if c, err := control.Dial(cl.socket); err == nil {
			st, err := c.Status(cl.ctx)
			c.Close()
			switch {
			case err != nil:
			case st.Upgrades > before.Upgrades:
				stop()
				fmt.Fprintf(cl.stdout, "upgraded: parent %d, %d workers kept\n", st.PID, len(st.Slots))
				return exitOK
			case st.UpgradesFailed > before.UpgradesFailed:
				stop()
				return cl.fail(fmt.Errorf("failed: the new parent gave the state back; parent %d carries on (its log says why)", st.PID))
			}
		}
		select {
		case <-cl.ctx.Done():
			return cl.fail(cl.ctx.Err())
		case <-time.After(50 * time.Millisecond): // polling a parent that is restarting its image
		}
	}
	return cl.fail(errors.New("no answer from the parent within a minute of the upgrade"))
}
