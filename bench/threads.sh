#!/usr/bin/env bash
# bench/threads.sh — where a server's context switches go, thread by thread.
#
# Starts one hello-world server (a peer of run.sh: nethttp, forkline-nethttp,
# forkline-nethttp-1w, forkline-fasthttp, fasthttp-prefork), loads it with
# wrk for DURATION seconds, and prints, for every thread of its serving
# processes (the workers; the one process for nethttp): voluntary and
# involuntary context switches and CPU time over the run (from
# /proc/<pid>/task/<tid>/{status,stat}), per request too, and what the
# thread was waiting in most often when sampled (/proc/<tid>/wchan, 5 times a
# second): hrtimer_nanosleep is the Go runtime's sysmon, do_epoll_wait its
# netpoller, futex_* a parked thread.
#
# It is how the README's figure on sysmon was taken: with two 1-P workers
# sharing two CPUs with wrk, each worker's sysmon wakes thousands of times
# a second; in one 2-P process it mostly sleeps.
#
# Usage:  cd bench && ./threads.sh [peer...]     (default: nethttp forkline-nethttp)
# Env:    DURATION=4  CONNS=64  WORKERS=2
#
# The server runs in a process group of its own and is stopped by
# signalling that group (SIGTERM, then SIGKILL after 10 s); then its workers
# must be gone too (lib.sh's stop_group).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=${DURATION:-4}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
(($#)) || set -- nethttp forkline-nethttp
for t in wrk go ss pgrep setsid; do
	command -v $t >/dev/null || { echo "threads.sh: $t is required" >&2; exit 1; }
done

work=$(mktemp -d /tmp/forkline-threads.XXXXXX)
started=() # leaders of the process groups this script created
cleanup() {
	stop_started
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$root" && go build -o "$work/forkline-nethttp" ./examples/hello)
(cd "$here" && go build -o "$work/" ./peers/nethttp ./peers/fasthttpprefork ./cmd/startup)
if [[ " $* " == *" forkline-fasthttp "* ]]; then
	(cd "$root/examples/fasthttp" && go build -o "$work/forkline-fasthttp" .)
fi

snapshot() { # pid...: "tid voluntary involuntary cpu_ticks" per thread
	local p t
	for p; do
		for t in /proc/"$p"/task/*; do
			[[ -r $t/status ]] || continue
			printf '%s/%s %s %s\n' "$p" "${t##*/}" \
				"$(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v + 0, n + 0 }' "$t/status" 2>/dev/null)" \
				"$(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
		done
	done | sort
}

for peer in "$@"; do
	port=$(free_port)
	addr=127.0.0.1:$port
	distinct=$WORKERS children=$WORKERS
	case $peer in
	nethttp) cmd=("$work/nethttp" -addr "$addr"); distinct=1 children=0 ;;
	forkline-nethttp) cmd=("$work/forkline-nethttp" -addr "$addr" -workers "$WORKERS") ;;
	forkline-nethttp-1w) cmd=("$work/forkline-nethttp" -addr "$addr" -workers 1); distinct=1 children=1 ;;
	forkline-fasthttp) cmd=("$work/forkline-fasthttp" -addr "$addr" -workers "$WORKERS") ;;
	fasthttp-prefork) cmd=("$work/fasthttpprefork" -addr "$addr" -workers "$WORKERS") ;;
	*) echo "threads.sh: unknown peer $peer" >&2; exit 2 ;;
	esac
	start_session "$work/$peer.log" "$peer" "${cmd[@]}"
	"$work/startup" -addr "$addr" -distinct "$distinct" -timeout 30s >/dev/null 2>>"$work/$peer.log" || {
		echo "threads.sh: $peer did not start; its log:" >&2
		tail -n 20 "$work/$peer.log" >&2
		exit 1
	}
	servers=("$pid")
	((children == 0)) || mapfile -t servers < <(pgrep -P "$pid" | sort -n)
	wrk -t1 -c"$CONNS" -d1s "http://$addr/" >/dev/null # warm-up
	snapshot "${servers[@]}" >"$work/before"
	wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://$addr/" >"$work/wrk.txt" &
	wrk_pid=$!
	: >"$work/wchan"
	# Sampled with shell builtins only, 5 times a second: a sampler that
	# forks would be one more process competing for the CPUs.
	while kill -0 "$wrk_pid" 2>/dev/null; do
		for p in "${servers[@]}"; do
			for t in /proc/"$p"/task/*; do
				w=-
				read -r w <"$t/wchan" 2>/dev/null || true
				echo "$p/${t##*/} ${w:--}"
			done
		done >>"$work/wchan"
		sleep 0.2
	done
	wait "$wrk_pid"
	snapshot "${servers[@]}" >"$work/after"
	rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk.txt")
	stop_group "$pid" "${servers[@]}"

	echo "== $peer: $rps req/s over ${DURATION}s (wrk -t1 -c$CONNS)"
	printf '%-14s %9s %9s %8s %8s  %s\n' process/thread voluntary involunt. "cpu ms" "cs/req" "waits most in"
	join "$work/before" "$work/after" | while read -r tid v0 n0 c0 v1 n1 c1; do
		v=$((v1 - v0)) n=$((n1 - n0)) c=$(((c1 - c0) * 1000 / $(getconf CLK_TCK)))
		((v + n + c > 0)) || continue
		w=$(awk -v t="$tid" '$1 == t && $2 != "0" && $2 != "-" { n[$2]++ } END { for (k in n) if (n[k] > m) { m = n[k]; b = k } print (b == "" ? "running" : b) }' "$work/wchan")
		printf '%-14s %9d %9d %8d %8.3f  %s\n' "$tid" "$v" "$n" "$c" "$(awk -v s=$((v + n)) -v r="$rps" -v d="$DURATION" 'BEGIN { print s / (r * d) }')" "$w"
	done
	echo
done
