package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// verdict of one failure.
type verdict struct {
	f          failure
	fault      *fault   // blamed fault; nil: none
	candidates []*fault // every fault whose window contains it
	allowed    bool
	reason     string
}

// faultTally is what one fault caused.
type faultTally struct {
	byKind     map[string]int
	held       int // kill: the victim's accepted connections
	matched    int // kill: failures on those very connections
	violations int
}

// accounting is the attribution of every failure.
type accounting struct {
	verdicts []verdict
	tally    map[*fault]*faultTally
	byKind   map[string]int
	expected int // failures during the parent restart
	allowed  int // failures on a killed worker's accepted connections
	bad      []verdict
}

// settle computes, for each fault, when the cluster was back to its wanted
// worker count serving after the parent acknowledged the fault.
func (s *soak) settle() {
	for _, f := range s.faults {
		if f.skipped {
			continue
		}
		switch f.kind {
		case faultKill:
			victim := f.victim
			f.ack = f.tr.find(f.at, func(l logLine) bool { return exitMsgs[l.msg] && l.int("pid") == victim })
			if f.ack >= 0 {
				f.end, f.ended = f.tr.settledFrom(f.ack, f.at)
			}
			f.detail += killTiming(f)
		case faultStall:
			f.end, f.ended = f.tr.settledFrom(f.tr.indexAt(f.ackAt), f.ackAt)
		case faultHUP:
			f.ack = f.tr.find(f.at, func(l logLine) bool { return l.msg == "reloading" })
			if f.ack >= 0 {
				f.end, f.ended = f.tr.settledFrom(f.ack, f.at)
			}
		case faultTTIN, faultTTOU:
			if f.ack >= 0 {
				f.end, f.ended = f.tr.settledFrom(f.ack, f.at)
			}
		case faultParent:
			f.end, f.ended = f.ackAt, !f.ackAt.IsZero()
		}
	}
}

// attribute judges every failure against the faults' windows.
func (s *soak) attribute(failures []failure) *accounting {
	a := &accounting{tally: map[*fault]*faultTally{}, byKind: map[string]int{}}
	for _, f := range s.faults {
		a.tally[f] = &faultTally{byKind: map[string]int{}, held: len(f.held)}
	}
	sort.Slice(failures, func(i, j int) bool { return failures[i].at.Before(failures[j].at) })
	for _, fl := range failures {
		v := s.judge(fl)
		a.byKind[fl.kind]++
		if v.fault != nil {
			t := a.tally[v.fault]
			t.byKind[fl.kind]++
			if v.allowed && v.fault.kind == faultKill {
				t.matched++
			}
			if !v.allowed {
				t.violations++
			}
		}
		switch {
		case !v.allowed:
			a.bad = append(a.bad, v)
		case v.fault.kind == faultParent:
			a.expected++
		default:
			a.allowed++
		}
		a.verdicts = append(a.verdicts, v)
	}
	return a
}

// judge attributes one failure. A failure on a connection a killed worker
// held when it was killed is allowed. Otherwise the failure is blamed on
// the latest fault whose window (from its effect, see effectAt) contains
// it; only the parent's restart is allowed to cause such failures (nobody
// listens during the gap).
func (s *soak) judge(fl failure) verdict {
	v := verdict{f: fl}
	for _, f := range s.faults {
		if f.skipped || fl.at.Before(f.effectAt()) || fl.at.After(f.windowEnd(s.cfg.timeout)) {
			continue
		}
		v.candidates = append(v.candidates, f)
		if f.kind == faultKill && fl.port != 0 && f.held[fl.port] && !fl.dialed.After(f.killAt) {
			v.fault, v.allowed, v.reason = f, true, "on a connection the killed worker had accepted"
			return v
		}
	}
	if len(v.candidates) == 0 {
		v.reason = "no fault explains it (steady state)"
		return v
	}
	v.fault = v.candidates[len(v.candidates)-1]
	switch v.fault.kind {
	case faultParent:
		v.allowed, v.reason = true, "during the parent's restart"
	case faultKill:
		v.reason = "lost queued connection: not one the killed worker had accepted"
	case faultHUP:
		v.reason = "caused by a reload"
	case faultTTIN, faultTTOU:
		v.reason = "caused by scaling"
	case faultStall:
		v.reason = "caused by a stall"
	}
	return v
}

// gap is how long the port had nobody serving around the parent restart.
func (s *soak) restartGap() time.Duration {
	for _, f := range s.faults {
		if f.kind == faultParent && f.ended {
			return f.end.Sub(f.at)
		}
	}
	return 0
}

// killTiming says when the victim died and when the parent logged it.
func killTiming(f *fault) string {
	parts := []string{f.pre}
	if !f.diedAt.IsZero() {
		parts = append(parts, fmt.Sprintf("dead %v after SIGKILL", ms(f.diedAt.Sub(f.killAt))))
	}
	if f.ack >= 0 {
		parts = append(parts, fmt.Sprintf("exit logged by the parent %v after SIGKILL", ms(f.tr.line(f.ack).at.Sub(f.killAt))))
	} else {
		parts = append(parts, "exit never logged")
	}
	return "; " + strings.Join(parts, ", ")
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
