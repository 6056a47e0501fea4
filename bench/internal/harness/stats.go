package harness

import (
	"maps"
	"slices"
)

// Order returns items in the order of round (counted from 1): as given in
// odd rounds, reversed in even ones (A B, B A, A B, ...), so that a steady
// drift in a shared machine's load does not always favour the one that
// runs first.
func Order[T any](items []T, round int) []T {
	out := slices.Clone(items)
	if round%2 == 0 {
		slices.Reverse(out)
	}
	return out
}

// Median of v; 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PerRound is one figure of one peer, by round.
type PerRound map[int]float64

// Rounds returns the rounds that have a figure, in order.
func (p PerRound) Rounds() []int { return slices.Sorted(maps.Keys(p)) }

// Values returns the figures in round order.
func (p PerRound) Values() []float64 {
	out := make([]float64, 0, len(p))
	for _, r := range p.Rounds() {
		out = append(out, p[r])
	}
	return out
}

// Median of the figures.
func (p PerRound) Median() float64 { return Median(p.Values()) }

// Ratios returns a/b for each round that both have (b non-zero) and that
// keep accepts (nil: every round), in round order, with the rounds.
func Ratios(a, b PerRound, keep func(round int) bool) (rounds []int, ratios []float64) {
	for _, r := range a.Rounds() {
		d, ok := b[r]
		if !ok || d == 0 || (keep != nil && !keep(r)) {
			continue
		}
		rounds = append(rounds, r)
		ratios = append(ratios, a[r]/d)
	}
	return rounds, ratios
}
