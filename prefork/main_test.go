package prefork_test

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// The test binary is its own child: with FORKLINE_TEST_HELPER set it runs
// the named helper program instead of the tests. A helper cluster's parent
// and its workers are all this binary; prefork tells them apart.
const envHelper = "FORKLINE_TEST_HELPER"

// helpers are the helper programs, by name (registerHelper); helpersUsed,
// those a test has started in this run.
var (
	helpers     = map[string]func(args []string) int{}
	helpersMu   sync.Mutex
	helpersUsed = map[string]bool{}
)

// registerHelper makes fn the helper program name. It is called from init
// functions; a name registered twice is a mistake.
func registerHelper(name string, fn func(args []string) int) {
	if _, dup := helpers[name]; dup {
		panic("prefork_test: helper " + name + " registered twice")
	}
	helpers[name] = fn
}

// useHelper records that a test runs helper name (a test that skips before
// starting it counts as using it) and returns the environment entry that
// selects it.
func useHelper(name string) string {
	if _, ok := helpers[name]; !ok {
		panic("prefork_test: no helper " + name)
	}
	helpersMu.Lock()
	helpersUsed[name] = true
	helpersMu.Unlock()
	return envHelper + "=" + name
}

func TestMain(m *testing.M) {
	if name := os.Getenv(envHelper); name != "" {
		helper, ok := helpers[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown helper %q\n", name)
			os.Exit(2)
		}
		os.Exit(helper(os.Args[1:]))
	}
	// A race-enabled process sleeps 1 s in os.Exit by default: every
	// drained worker would spend it as a process that no longer serves.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	flag.Parse()
	if !flagSet("test.parallel") {
		// Most tests here wait (for processes to start, for a pause, a
		// timeout, a slow handler) rather than compute: -parallel's
		// default, GOMAXPROCS, would leave the CPUs idle while two of them
		// wait. An explicit -parallel wins.
		flag.Set("test.parallel", strconv.Itoa(max(4, runtime.GOMAXPROCS(0))))
	}
	code := m.Run()
	if code == 0 && wholeSuite() {
		// As os/exec's tests do: a helper no test starts is dead code.
		for name := range helpers {
			if !helpersUsed[name] {
				fmt.Fprintf(os.Stderr, "helper %q was not used by any test; remove it\n", name)
				code = 1
			}
		}
	}
	if code == 0 {
		// goleak.VerifyTestMain would exit by itself, before the check above.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// wholeSuite reports whether this run ran every test: no -run, -skip or
// -list filter.
func wholeSuite() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// flagSet reports whether flag name was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
