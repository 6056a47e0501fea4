package harness

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Knobs are a suite's settings. Each is a flag whose default comes from an
// environment variable, the name the shell scripts used before (ROUNDS,
// DURATION, ...), so that both ways keep working; a flag given on the
// command line wins over the variable.
type Knobs struct {
	suite, about string
	fs           *flag.FlagSet
	list         []*knob
	errs         []error
	keep         *bool
	results      *string
}

type knob struct {
	flag, env string
	v         flag.Value
	def       string // the value's text before the environment was read
	always    bool   // listed in Invocation even at its default
	fromEnv   bool
}

// NewKnobs returns the knobs of the suite named name (also the name of its
// folder and of its results file), with KEEP and RESULTS already declared.
func NewKnobs(name, about string) *Knobs {
	k := &Knobs{suite: name, about: about, fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	k.keep = k.Bool("keep", "KEEP", false, "keep the temp dir (binaries, raw output, logs)")
	k.results = k.String("results", "RESULTS", name+".md", "results file, in bench/results/ unless absolute; empty: none")
	return k
}

// Int declares a whole number of at least min; a trailing "s" is accepted,
// as the scripts accepted DURATION=10s.
func (k *Knobs) Int(flagName, env string, def, min int, usage string) *int {
	p := new(int)
	*p = def
	k.add(flagName, env, &intValue{p: p, min: min}, usage)
	return p
}

// Seconds declares a duration given as a number of seconds ("0.5", "3s")
// or as a Go duration ("500ms").
func (k *Knobs) Seconds(flagName, env string, def time.Duration, usage string) *time.Duration {
	p := new(time.Duration)
	*p = def
	k.add(flagName, env, (*secondsValue)(p), usage)
	return p
}

// String declares a text setting.
func (k *Knobs) String(flagName, env, def, usage string) *string {
	p := new(string)
	*p = def
	k.add(flagName, env, (*stringValue)(p), usage)
	return p
}

// Bool declares a switch: empty, 0, false and no are off, anything else on
// (as the scripts tested the variable for being non-empty).
func (k *Knobs) Bool(flagName, env string, def bool, usage string) *bool {
	p := new(bool)
	*p = def
	k.add(flagName, env, (*boolValue)(p), usage)
	return p
}

// Always marks knobs that Invocation lists even at their default, so that
// a results file says how it was measured.
func (k *Knobs) Always(flagNames ...string) {
	for _, n := range flagNames {
		for _, kn := range k.list {
			if kn.flag == n {
				kn.always = true
			}
		}
	}
}

func (k *Knobs) add(flagName, env string, v flag.Value, usage string) {
	kn := &knob{flag: flagName, env: env, v: v, def: v.String()}
	if s, ok := os.LookupEnv(env); ok && env != "" {
		kn.fromEnv = true
		if err := v.Set(s); err != nil {
			k.errs = append(k.errs, fmt.Errorf("%s=%q: %w", env, s, err))
		}
	}
	if env != "" {
		usage += " (env " + env + ")"
	}
	k.fs.Var(v, flagName, usage)
	k.list = append(k.list, kn)
}

// Parse reads the command line; errors in the environment are reported
// with those of the flags. -h prints the knobs and returns flag.ErrHelp.
func (k *Knobs) Parse(args []string) error {
	k.fs.SetOutput(io.Discard) // the errors go back to the caller, once
	if err := k.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %s\n\nUsage: cd bench && [ENV=value ...] go run ./%s [flags]\n\n", k.suite, k.about, k.suite)
			k.PrintDefaults(os.Stderr)
			return err
		}
		return errors.Join(append(k.errs, err)...)
	}
	return errors.Join(k.errs...)
}

// Args returns the arguments after the flags.
func (k *Knobs) Args() []string { return k.fs.Args() }

// IsSet reports whether the knob was given, by flag or by environment.
func (k *Knobs) IsSet(flagName string) bool {
	set := false
	k.fs.Visit(func(f *flag.Flag) { set = set || f.Name == flagName })
	for _, kn := range k.list {
		set = set || (kn.flag == flagName && kn.fromEnv)
	}
	return set
}

// Invocation is the command that repeats this run: every knob that is not
// at its default (and those marked Always), as an environment assignment,
// or as a flag for knobs that have no variable.
func (k *Knobs) Invocation() string {
	var env, flags []string
	for _, kn := range k.list {
		v := kn.v.String()
		if kn.flag == "keep" || kn.flag == "results" || (!kn.always && v == kn.def) {
			continue
		}
		if kn.env == "" {
			flags = append(flags, "-"+kn.flag+"="+quote(v))
		} else {
			env = append(env, kn.env+"="+quote(v))
		}
	}
	cmd := append(append(env, "go", "run", "./"+k.suite), flags...)
	return "cd bench && " + strings.Join(cmd, " ")
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t'\"$") {
		return strconv.Quote(s)
	}
	return s
}

// PrintDefaults writes the knobs' help to w.
func (k *Knobs) PrintDefaults(w io.Writer) {
	k.fs.SetOutput(w)
	k.fs.PrintDefaults()
}

type intValue struct {
	p   *int
	min int
}

func (v *intValue) String() string {
	if v == nil || v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(s), "s"))
	if err != nil {
		return errors.New("not a whole number")
	}
	if n < v.min {
		return fmt.Errorf("must be at least %d", v.min)
	}
	*v.p = n
	return nil
}

type secondsValue time.Duration

func (v *secondsValue) String() string {
	return strconv.FormatFloat(time.Duration(*v).Seconds(), 'f', -1, 64)
}

func (v *secondsValue) Set(s string) error {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64)
		if ferr != nil {
			return errors.New("not a number of seconds nor a duration")
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	*v = secondsValue(d)
	return nil
}

type stringValue string

func (v *stringValue) String() string     { return string(*v) }
func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }

type boolValue bool

func (v *boolValue) String() string {
	if *v {
		return "1"
	}
	return ""
}

func (v *boolValue) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "false", "no":
		*v = false
	default:
		*v = true
	}
	return nil
}

// IsBoolFlag lets -keep stand alone on the command line.
func (v *boolValue) IsBoolFlag() bool { return true }
