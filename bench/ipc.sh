#!/usr/bin/env bash
# bench/ipc.sh — the messaging benchmark behind `make bench-ipc`: forkline's
# messages (bench/cmd/ipc) against Node's cluster (bench/ipc-node.js), each
# with 2 workers, on this machine.
#
# Rounds are interleaved (round 1: ipc then node, round 2: node then ipc,
# ...) so that drift in a noisy machine's load hits both alike. It prints the
# median over the rounds of each figure:
#
#   ipc-roundtrip-us        Request(ctx, 1, 64 B) echoed by worker 1, median µs
#   ipc-oneway-msgs-per-s   worker 1 → parent Send of 64 B, msg/s
#   ipc-relay-msgs-per-s    worker 1 → worker 2 through the parent, msg/s
#                           delivered (the parent holds worker 1 back while
#                           worker 2's queue is full; anything lost shows in
#                           ipc-relay-dropped)
#   node-roundtrip-us       worker.send of a 64-char string echoed, median µs
#   node-oneway-msgs-per-s  process.send of a 64-char string, msg/s
#
# then, after a blank line, the other figures of bench/cmd/ipc, and two
# controls for the round trip, measured in the same rounds:
#
#   floor-netpoll-roundtrip-us   bench/cmd/pingpong: two Go processes that
#                                bounce one 88-byte frame over a socketpair
#                                through net.Conn, nothing else: the floor
#                                for any Go program that waits in the
#                                runtime's netpoller, as a worker must
#   floor-blocking-roundtrip-us  the same with blocking read(2) (the kernel
#                                alone; no Go server can wait this way)
#   *-one-cpu-us                 forkline's and Node's round trip and the
#                                netpoll floor with every process on CPU 0
#                                (taskset -c 0): no wake-up crosses CPUs.
#                                On a VM a cross-CPU wake-up of an idle vCPU
#                                costs tens of µs, and how much varies by
#                                the hour; on one CPU what is left is the
#                                software path.
#
# then the figures of every round, the ratios and the targets. The same goes to
# RESULTS with the date, the command, the kernel, the CPUs and the load.
#
# Usage:  cd bench && ./ipc.sh
#         GOMAXPROCS=1 ./ipc.sh   (the parent, and the workers, with one P)
# Env:    ROUNDS=3   IPC_FLAGS="" (extra flags for bench/cmd/ipc)
#         NODE_FLAGS="" (extra flags for ipc-node.js)
#         RUN_TIMEOUT=180 (seconds, bound on each run)
#         RESULTS=ipc-results.md (file written next to this script; "" = none)
#         KEEP=1 keeps the temp dir (binary, raw output of every run)
set -euo pipefail

cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-3}
IPC_FLAGS=${IPC_FLAGS:-}
NODE_FLAGS=${NODE_FLAGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
RESULTS=${RESULTS-ipc-results.md}
NODE=${NODE:-node}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/forkline-ipc.XXXXXX")
cleanup() {
	if [[ -n ${KEEP:-} ]]; then
		echo "kept $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

# bench/go.mod replaces github.com/forkline/forkline with ../ but may not
# require it; then build against a copy of go.mod that does (bench/go.mod
# itself is left alone).
modflag=()
if ! go list ./cmd/ipc >/dev/null 2>&1; then
	cp go.mod "$tmp/go.mod"
	cat go.sum ../go.sum 2>/dev/null | sort -u >"$tmp/go.sum"
	req=(-require=github.com/forkline/forkline@v0.0.0-00010101000000-000000000000)
	# forkline's own requirements, which the pruned module graph wants
	# listed too.
	requires() {
		awk '/^require \(/ { f = 1; next } f && /^\)/ { f = 0 }
			f && NF >= 2 { print $1, $2 } /^require [^(]/ { print $2, $3 }' "$1"
	}
	while read -r path version; do
		# Never downgrade what bench/go.mod already requires.
		have=$(requires go.mod | awk -v p="$path" '$1 == p { print $2 }')
		if [[ -n $have ]]; then
			version=$(printf '%s\n%s\n' "$have" "$version" | sort -V | tail -n 1)
		fi
		req+=("-require=$path@$version")
	done < <(requires ../go.mod)
	go mod edit -modfile="$tmp/go.mod" "${req[@]}"
	modflag=(-modfile="$tmp/go.mod")
fi
go build "${modflag[@]}" -o "$tmp/ipc" ./cmd/ipc
go build "${modflag[@]}" -o "$tmp/pingpong" ./cmd/pingpong
one_cpu=(taskset -c 0)
if ! command -v taskset >/dev/null || ! taskset -c 0 true 2>/dev/null; then
	echo "ipc.sh: taskset -c 0 is not available: no one-CPU figures" >&2
	one_cpu=()
fi

run_ipc() {
	local r=$1
	# shellcheck disable=SC2086
	if ! timeout "$RUN_TIMEOUT" "$tmp/ipc" $IPC_FLAGS >"$tmp/ipc.$r.out" 2>"$tmp/ipc.$r.err"; then
		echo "ipc.sh: bench/cmd/ipc failed in round $r:" >&2
		cat "$tmp/ipc.$r.err" >&2
		exit 1
	fi
}

run_node() {
	local r=$1
	# shellcheck disable=SC2086
	if ! timeout "$RUN_TIMEOUT" "$NODE" ipc-node.js $NODE_FLAGS >"$tmp/node.$r.out" 2>"$tmp/node.$r.err"; then
		echo "ipc.sh: ipc-node.js failed in round $r:" >&2
		cat "$tmp/node.$r.err" >&2
		exit 1
	fi
}

# The controls: the floors, and round trips on one CPU (short floods: only
# the round trip is read from these runs).
run_controls() {
	local r=$1 m
	for m in netpoll blocking; do
		if ! timeout "$RUN_TIMEOUT" "$tmp/pingpong" -mode $m >"$tmp/floor-$m.$r.out" 2>"$tmp/floor-$m.$r.err"; then
			echo "ipc.sh: bench/cmd/pingpong -mode $m failed in round $r:" >&2
			cat "$tmp/floor-$m.$r.err" >&2
			exit 1
		fi
	done
	((${#one_cpu[@]})) || return 0
	# shellcheck disable=SC2086
	if ! timeout "$RUN_TIMEOUT" "${one_cpu[@]}" "$tmp/ipc" $IPC_FLAGS -oneway 10000 -relay 10000 -send 10000 \
		>"$tmp/ipc1.$r.out" 2>"$tmp/ipc1.$r.err"; then
		echo "ipc.sh: bench/cmd/ipc on one CPU failed in round $r:" >&2
		cat "$tmp/ipc1.$r.err" >&2
		exit 1
	fi
	# shellcheck disable=SC2086
	if ! timeout "$RUN_TIMEOUT" "${one_cpu[@]}" "$NODE" ipc-node.js $NODE_FLAGS -oneway 10000 \
		>"$tmp/node1.$r.out" 2>"$tmp/node1.$r.err"; then
		echo "ipc.sh: ipc-node.js on one CPU failed in round $r:" >&2
		cat "$tmp/node1.$r.err" >&2
		exit 1
	fi
	if ! timeout "$RUN_TIMEOUT" "${one_cpu[@]}" "$tmp/pingpong" -mode netpoll >"$tmp/floor1.$r.out" 2>"$tmp/floor1.$r.err"; then
		echo "ipc.sh: bench/cmd/pingpong on one CPU failed in round $r:" >&2
		cat "$tmp/floor1.$r.err" >&2
		exit 1
	fi
}

loads=()
for ((r = 1; r <= ROUNDS; r++)); do
	loads+=("$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')")
	if ((r % 2)); then
		run_ipc "$r"
		run_node "$r"
		run_controls "$r"
	else
		run_controls "$r"
		run_node "$r"
		run_ipc "$r"
	fi
	echo "round $r/$ROUNDS done" >&2
done

# value KEY FILE: the number after KEY in FILE.
value() { awk -v k="$1" '$1 == k { print $2; exit }' "$2"; }

# median of the arguments.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "?"; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# p99 of the round trips of one run, from its stderr.
p99() { sed -n 's/^roundtrip: .* p99 \([0-9.]*\) us.*/\1/p' "$1"; }

# CPU time per round trip of one run, "parent/worker" in µs, from its stderr.
rtcpu() { sed -n 's/^roundtrip: per round trip: CPU time [a-z]* \([0-9.]*\) us, worker 1 \([0-9.]*\) us.*/\1\/\2/p' "$1"; }

main_keys=(ipc-roundtrip-us ipc-oneway-msgs-per-s ipc-relay-msgs-per-s node-roundtrip-us node-oneway-msgs-per-s)
extra_keys=(ipc-send-allocs-per-msg ipc-recv-allocs-per-msg ipc-relay-dropped ipc-relay-windowed-msgs-per-s ipc-send-msgs-per-s)
control_keys=(floor-netpoll-roundtrip-us floor-blocking-roundtrip-us)
((${#one_cpu[@]})) && control_keys+=(ipc-roundtrip-one-cpu-us node-roundtrip-one-cpu-us floor-netpoll-one-cpu-us)

# source KEY ROUND: the file and the key in it that hold KEY's figure.
source_of() {
	case $1 in
	ipc-roundtrip-one-cpu-us) echo "$tmp/ipc1.$2.out ipc-roundtrip-us" ;;
	node-roundtrip-one-cpu-us) echo "$tmp/node1.$2.out node-roundtrip-us" ;;
	floor-netpoll-one-cpu-us) echo "$tmp/floor1.$2.out floor-netpoll-roundtrip-us" ;;
	floor-netpoll-*) echo "$tmp/floor-netpoll.$2.out $1" ;;
	floor-blocking-*) echo "$tmp/floor-blocking.$2.out $1" ;;
	node-*) echo "$tmp/node.$2.out $1" ;;
	*) echo "$tmp/ipc.$2.out $1" ;;
	esac
}
fig() { # fig KEY ROUND: KEY's figure in round ROUND
	local f k
	read -r f k < <(source_of "$1" "$2")
	value "$k" "$f"
}

declare -A med
for k in "${main_keys[@]}" "${extra_keys[@]}" "${control_keys[@]}"; do
	vals=()
	for ((r = 1; r <= ROUNDS; r++)); do
		vals+=("$(fig "$k" "$r")")
	done
	med[$k]=$(median "${vals[@]}")
done

# round_ratios A B: the median over the rounds of A/B, then each round's.
round_ratios() {
	local r rs=()
	for ((r = 1; r <= ROUNDS; r++)); do
		rs+=("$(ratio "$(fig "$1" "$r")" "$(fig "$2" "$r")")")
	done
	echo "$(median "${rs[@]}")x (rounds: ${rs[*]})"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "?"; else printf "%.2f", a / b }'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? v <= t : v >= t; print ok ? "met" : "NOT met" }'; }

report() {
	for k in "${main_keys[@]}"; do
		echo "$k ${med[$k]}"
	done
	echo
	echo "# medians of $ROUNDS interleaved rounds; other figures of bench/cmd/ipc:"
	for k in "${extra_keys[@]}"; do
		echo "$k ${med[$k]}"
	done
	echo
	echo "# controls for the round trip (medians of the same rounds; see the top of ipc.sh):"
	for k in "${control_keys[@]}"; do
		echo "$k ${med[$k]}"
	done
	echo
	echo "# per round (load: 1-minute load average before the round; cpu: CPU time per round trip"
	echo "# in the parent/worker 1, µs; rt and p99 in µs, rates in msg/s):"
	printf '# %-5s %5s  %6s %6s %9s  %9s %9s %7s  %6s %6s %9s  %9s\n' round load \
		ipc-rt p99 cpu oneway relay dropped node-rt p99 cpu node-oneway
	for ((r = 1; r <= ROUNDS; r++)); do
		printf '# %-5s %5s  %6s %6s %9s  %9s %9s %7s  %6s %6s %9s  %9s\n' "$r" "${loads[r - 1]}" \
			"$(value ipc-roundtrip-us "$tmp/ipc.$r.out")" "$(p99 "$tmp/ipc.$r.err")" "$(rtcpu "$tmp/ipc.$r.err")" \
			"$(value ipc-oneway-msgs-per-s "$tmp/ipc.$r.out")" "$(value ipc-relay-msgs-per-s "$tmp/ipc.$r.out")" \
			"$(value ipc-relay-dropped "$tmp/ipc.$r.out")" \
			"$(value node-roundtrip-us "$tmp/node.$r.out")" "$(p99 "$tmp/node.$r.err")" "$(rtcpu "$tmp/node.$r.err")" \
			"$(value node-oneway-msgs-per-s "$tmp/node.$r.out")"
	done
	echo "# round trips of the controls, per round (µs):"
	printf '# %-5s' round
	printf ' %s' "${control_keys[@]}"
	echo
	for ((r = 1; r <= ROUNDS; r++)); do
		printf '# %-5s' "$r"
		for k in "${control_keys[@]}"; do
			printf " %${#k}s" "$(fig "$k" "$r")"
		done
		echo
	done
	echo
	echo "# forkline vs Node (medians):"
	echo "#   round trip: forkline/node latency $(ratio "${med[ipc-roundtrip-us]}" "${med[node-roundtrip-us]}")x (below 1: forkline is faster)"
	echo "#   one-way:    forkline/node rate $(ratio "${med[ipc-oneway-msgs-per-s]}" "${med[node-oneway-msgs-per-s]}")x"
	echo "#   relay:      forkline relay / node one-way rate $(ratio "${med[ipc-relay-msgs-per-s]}" "${med[node-oneway-msgs-per-s]}")x (Node's cluster has no worker-to-worker send)"
	echo "#   round trip / netpoll floor, median of the per-round ratios: $(round_ratios ipc-roundtrip-us floor-netpoll-roundtrip-us)"
	if ((${#one_cpu[@]})); then
		echo "#   on one CPU: round trip / netpoll floor $(round_ratios ipc-roundtrip-one-cpu-us floor-netpoll-one-cpu-us)"
		echo "#               forkline / node round trip $(round_ratios ipc-roundtrip-one-cpu-us node-roundtrip-one-cpu-us)"
	fi
	echo "# targets:"
	echo "#   round trip <= 20 us median: ${med[ipc-roundtrip-us]} us, $(verdict "${med[ipc-roundtrip-us]}" 20 le)" \
		"$( ((${#one_cpu[@]})) && echo "(on one CPU: ${med[ipc-roundtrip-one-cpu-us]} us, $(verdict "${med[ipc-roundtrip-one-cpu-us]}" 20 le))")"
	echo "#   one-way >= 1,000,000 msg/s: ${med[ipc-oneway-msgs-per-s]}, $(verdict "${med[ipc-oneway-msgs-per-s]}" 1000000 ge)"
	echo "#   relay >= 300,000 msg/s:     ${med[ipc-relay-msgs-per-s]} delivered, $(verdict "${med[ipc-relay-msgs-per-s]}" 300000 ge)" \
		"(dropped by the parent, per round: $(for ((r = 1; r <= ROUNDS; r++)); do printf '%s ' "$(value ipc-relay-dropped "$tmp/ipc.$r.out")"; done))"
	echo "#                               windowed (lossless) ${med[ipc-relay-windowed-msgs-per-s]}, $(verdict "${med[ipc-relay-windowed-msgs-per-s]}" 300000 ge)"
}

report

if [[ -n $RESULTS ]]; then
	{
		echo "# forkline messaging vs Node's cluster"
		echo
		echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
		echo "- command: \`cd bench && ROUNDS=$ROUNDS IPC_FLAGS='$IPC_FLAGS' NODE_FLAGS='$NODE_FLAGS' ./ipc.sh\` (\`make bench-ipc\`)"
		echo "- kernel: $(uname -r); CPUs (nproc): $(nproc); $(go version | cut -d' ' -f3-); node $("$NODE" --version)"
		echo "- load average before the rounds: ${loads[*]} (a shared machine: latency figures move with it)"
		echo
		echo '```'
		report
		echo '```'
	} >"$RESULTS"
	echo "wrote $RESULTS" >&2
fi
