package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/forkline/forkline/bench/internal/harness"
)

// quietLimit is how much of the CPUs other processes may have taken during
// a run for it to count as undisturbed.
const quietLimit = 5.0

// The request path's control: what forkline + net/http serves against the
// least a prefork can do, in the same rounds.
const (
	requestPathPeer    = "forkline-nethttp"
	requestPathControl = "minprefork"
)

// pair is two peers of the same run, compared round by round.
type pair struct{ a, b *peerRes }

func (b *bench) pairOf(a, base string) (pair, bool) {
	pa, pb := b.res[a], b.res[base]
	return pair{pa, pb}, pa != nil && pb != nil && len(pa.runs) > 0 && len(pb.runs) > 0
}

// quiet says whether neither run of round was disturbed.
func (p pair) quiet(round int) bool {
	ra, rb := p.a.runs[round], p.b.runs[round]
	return ra != nil && rb != nil && ra.other < quietLimit && rb.other < quietLimit
}

func formatRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(s, ", ")
}

// writeRatios gives each forkline peer against its baseline: the ratio of
// the medians, and the per-round ratios.
func (b *bench) writeRatios(w io.Writer) {
	for _, p := range peers {
		pr, ok := b.pairOf(p.name, p.baseline)
		if !strings.HasPrefix(p.name, "forkline-") || !ok {
			continue
		}
		_, per := harness.Ratios(pr.a.rps(), pr.b.rps(), nil)
		fmt.Fprintf(w, "- %s vs %s: **%.3f** [%s]\n", labelOf(p.name), labelOf(p.baseline),
			pr.a.rps().Median()/pr.b.rps().Median(), formatRatios(per))
	}
}

// writeQuiet gives the forkline ratios again, over only the rounds in which
// neither run of the pair was disturbed by other processes.
func (b *bench) writeQuiet(w io.Writer) {
	for _, p := range peers {
		if !strings.HasPrefix(p.name, "forkline-") {
			continue
		}
		if pr, ok := b.pairOf(p.name, p.baseline); ok {
			b.writeQuietPair(w, pr, p.name, p.baseline)
		}
	}
}

func (b *bench) writeQuietPair(w io.Writer, pr pair, a, base string) {
	rounds, ratios := harness.Ratios(pr.a.rps(), pr.b.rps(), pr.quiet)
	head := fmt.Sprintf("- %s vs %s, undisturbed rounds only (other processes < %.0f%% of the CPUs in both runs):",
		labelOf(a), labelOf(base), quietLimit)
	if len(rounds) == 0 {
		fmt.Fprintln(w, head, "none")
		return
	}
	strs := make([]string, len(rounds))
	for i, r := range rounds {
		strs[i] = fmt.Sprintf("round %d: %.3f", r, ratios[i])
	}
	fmt.Fprintf(w, "%s median **%.3f** [%s]\n", head, harness.Median(ratios), strings.Join(strs, ", "))
}

// requestPath is forkline + net/http's req/s over minprefork's, round by
// round.
func (b *bench) requestPath() (rounds []int, ratios []float64, ok bool) {
	pr, ok := b.pairOf(requestPathPeer, requestPathControl)
	if !ok {
		return nil, nil, false
	}
	rounds, ratios = harness.Ratios(pr.a.rps(), pr.b.rps(), nil)
	return rounds, ratios, len(ratios) > 0
}

// writeRequestPath gives the request path's ratio: the median of the
// per-round ratios, all rounds and undisturbed ones.
func (b *bench) writeRequestPath(w io.Writer) {
	rounds, ratios, ok := b.requestPath()
	if !ok {
		return
	}
	strs := make([]string, len(rounds))
	for i, r := range rounds {
		strs[i] = fmt.Sprintf("round %d: %.3f", r, ratios[i])
	}
	fmt.Fprintf(w, "- request path: %s vs %s, median of the per-round ratios (`request-path-ratio`): **%.3f** [%s]\n",
		labelOf(requestPathPeer), labelOf(requestPathControl), harness.Median(ratios), strings.Join(strs, ", "))
	pr, _ := b.pairOf(requestPathPeer, requestPathControl)
	b.writeQuietPair(w, pr, requestPathPeer, requestPathControl)
}

// requestPathLine is the line the suite prints last.
func (b *bench) requestPathLine() (string, bool) {
	_, ratios, ok := b.requestPath()
	if !ok {
		harness.Logf("no request-path-ratio: PEERS needs both %s and %s", requestPathPeer, requestPathControl)
		return "", false
	}
	return fmt.Sprintf("request-path-ratio %.3f", harness.Median(ratios)), true
}

// writeRounds gives every run's req/s and how much CPU other processes
// took meanwhile, so that the noise behind the medians can be judged.
func (b *bench) writeRounds(w io.Writer) {
	n := *b.c.rounds
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every run (req/s; in brackets, the share of all CPUs that other processes took during the run):")
	fmt.Fprintln(w)
	fmt.Fprint(w, "| Peer |")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, " round %d |", i)
	}
	fmt.Fprint(w, "\n|---|")
	for i := 1; i <= n; i++ {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	for _, p := range peers {
		r := b.res[p.name]
		if r == nil || len(r.runs) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s |", p.label)
		for i := 1; i <= n; i++ {
			if s, ok := r.runs[i]; ok {
				fmt.Fprintf(w, " %.0f (%.0f%%) |", s.wrk.RPS, s.other)
			} else {
				fmt.Fprint(w, " — |")
			}
		}
		fmt.Fprintln(w)
	}
}
