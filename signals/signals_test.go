package signals

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// watchdog bounds every wait; it fails the test, it never paces it.
const watchdog = 10 * time.Second

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{
		None:      "none",
		Reload:    "reload",
		Stop:      "stop",
		Quit:      "quit",
		ScaleUp:   "scale-up",
		ScaleDown: "scale-down",
		-1:        "Action(-1)",
		42:        "Action(42)",
	} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", int(a), got, want)
		}
	}
}

func TestSignalsMatchTable(t *testing.T) {
	sigs := Signals()
	if len(sigs) != len(table) {
		t.Fatalf("Signals() has %d signals, table %d", len(sigs), len(table))
	}
	seen := make(map[os.Signal]bool)
	for _, sig := range sigs {
		if seen[sig] {
			t.Errorf("%v listed twice", sig)
		}
		seen[sig] = true
		if ActionOf(sig) == None {
			t.Errorf("ActionOf(%v) = None for a handled signal", sig)
		}
	}
	for _, e := range table {
		for _, name := range []string{e.name, "SIG" + e.name, strings.ToLower(e.name)} {
			if got, err := Parse(name); err != nil || got != e.sig {
				t.Errorf("Parse(%q) = %v, %v; want %v", name, got, err, e.sig)
			}
		}
	}
	sigs[0] = nil
	if Signals()[0] == nil {
		t.Error("Signals() returned shared storage")
	}
	for i := 1; i < len(table); i++ {
		if table[i-1].name >= table[i].name {
			t.Errorf("table not sorted by name: %s before %s", table[i-1].name, table[i].name)
		}
	}
}

// otherSignal is a signal of no platform.
type otherSignal struct{}

func (otherSignal) String() string { return "other" }
func (otherSignal) Signal()        {}

func TestActionOfUnknown(t *testing.T) {
	if got := ActionOf(nil); got != None {
		t.Errorf("ActionOf(nil) = %v, want none", got)
	}
	if got := ActionOf(otherSignal{}); got != None {
		t.Errorf("ActionOf(%v) = %v, want none", otherSignal{}, got)
	}
}

func TestParseUnknown(t *testing.T) {
	known := make([]string, len(table))
	for i, e := range table {
		known[i] = e.name
	}
	for _, name := range []string{"FOO", "", "SIG", "sig", "SIGSIGHUP", "KILL", "USR1", "1", " HUP", "HUP "} {
		t.Run(name, func(t *testing.T) {
			sig, err := Parse(name)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", name, sig)
			}
			want := `signals: unknown signal "` + name + `" (known: ` + strings.Join(known, ", ") + ")"
			if err.Error() != want {
				t.Errorf("Parse(%q) error = %q, want %q", name, err, want)
			}
		})
	}
}

// start runs execute in a goroutine that the returned wait function joins,
// failing the test if execute does not return nil within the watchdog.
func start(t *testing.T, execute func() error) (wait func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- execute() }()
	return func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("execute returned %v, want nil", err)
			}
		case <-time.After(watchdog):
			t.Fatal("execute did not return")
		}
	}
}

func nop(os.Signal, Action) {}

func TestInterruptBeforeExecute(t *testing.T) {
	handled := false
	execute, interrupt := handler(context.Background(), func(os.Signal, Action) { handled = true }, nil)
	interrupt(nil)
	interrupt(nil)
	start(t, execute)() // returns at once
	if handled {
		t.Error("execute handled a signal after interrupt")
	}
	interrupt(nil) // after: still safe
}

func TestInterruptStopsExecute(t *testing.T) {
	ready := make(chan struct{})
	execute, interrupt := handler(context.Background(), nop, func() { close(ready) })
	wait := start(t, execute)
	select {
	case <-ready:
	case <-time.After(watchdog):
		t.Fatal("execute did not call Notify")
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { interrupt(context.Canceled) })
	}
	wg.Wait()
	wait()
	interrupt(nil)
}

func TestContextStopsExecute(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	execute, interrupt := handler(ctx, nop, func() { close(ready) })
	wait := start(t, execute)
	select {
	case <-ready:
	case <-time.After(watchdog):
		t.Fatal("execute did not call Notify")
	}
	cancel()
	wait()
	interrupt(nil)
}

func TestNilHandlePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Handler(ctx, nil) did not panic")
		}
	}()
	Handler(context.Background(), nil)
}
