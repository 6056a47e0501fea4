// Package harness is what every benchmark suite of forkline shares: its
// settings (Knobs), the binaries under test (Suite.Build), servers run in
// process groups of their own and stopped by that group only (Suite.Start,
// Server.Stop), readiness as N distinct worker pids answering (WaitDistinct),
// wrk and its output (Wrk, ParseWrk), interleaved rounds and their medians
// and ratios (Order, PerRound), /proc sampling (CPUms, CtxSwitches, RSSkB,
// BusyMS, Children) and the results file, stamped with the commit, the date
// and the machine (Suite.WriteResults).
//
// A suite is a folder of the bench module with a main package:
//
//	func main() {
//		k := harness.NewKnobs("steer", "eBPF steering: failed requests per fault case")
//		rounds := k.Int("rounds", "ROUNDS", 3, 1, "interleaved rounds")
//		harness.Main(k, func(s *harness.Suite) error {
//			bins, err := s.Build(harness.Pkg{Dir: s.Root, Path: "./examples/hello", Out: "hello"})
//			...
//			for r := 1; r <= *rounds; r++ {
//				for _, p := range harness.Order(peers, r) {
//					sv, err := s.Start(harness.Spec{Name: p.name, Argv: p.argv(port)})
//					harness.WaitDistinct(s.Ctx, addr, 2, 30*time.Second)
//					res, err := harness.Wrk{Threads: 1, Conns: 64, Seconds: 10}.Run(s.Ctx, url)
//					...
//					sv.Stop(harness.StopBound)
//				}
//			}
//			_, err = s.WriteResults(harness.Report{Title: "...", Body: table})
//			return err
//		})
//	}
//
// and a line in the repository's Makefile (`cd bench && $(GO) run ./steer`).
// Main parses the knobs (flags whose defaults come from environment
// variables, so that `ROUNDS=5 go run ./http` and `go run ./http -rounds 5`
// are the same), makes the suite's temp dir, stops every server still
// running when the suite returns or is interrupted, and removes the temp dir
// unless KEEP is set. Every suite has the knobs KEEP and RESULTS (the file in
// bench/results/ that it writes, <suite>.md by default; empty: none).
//
// Nothing here waits by sleeping for something to have happened: where the
// kernel tells (a child's exit, a pipe's end) the code waits for that; where
// it does not (a port that starts accepting, a process that is not our child
// exiting, a process group emptying), Poll looks at the kernel's state at a
// fixed pace and gives up at a bound.
package harness
