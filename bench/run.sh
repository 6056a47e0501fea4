#!/usr/bin/env bash
# bench/run.sh — the benchmark behind `make bench`.
#
# Six hello-world servers, each with 2 workers where that applies, all on
# 127.0.0.1 under wrk:
#
#   nethttp            net/http, one process (bench/peers/nethttp) — baseline
#   forkline-nethttp   examples/hello (forkline + net/http)
#   forkline-nethttp-1w  the same with 1 worker (GOMAXPROCS=2, as the
#                      baseline's one process): a control that isolates
#                      what forkline adds to each request from what two
#                      processes cost the OS scheduler
#   fasthttp-prefork   github.com/valyala/fasthttp/prefork, Reuseport on
#                      (bench/peers/fasthttpprefork)                — baseline
#   forkline-fasthttp  examples/fasthttp (forkline + fasthttp)
#   nginx              worker_processes 2, listen ... reuseport     — reference
#   node-cluster       Node's cluster module (bench/peers/node-cluster.js) — reference
#
# Rounds are interleaved (round 1: every peer, round 2: every peer in reverse
# order, ...) so that drift in a noisy machine's load hits every peer alike;
# the table shows the median per peer. For each multi-process peer it also
# samples the parent's CPU time (utime+stime from /proc/<pid>/stat) over the
# measured run, which for forkline should be ~0 because the parent is not in
# the request path; the workers' CPU time per request served; how the kernel
# spread wrk's connections over the workers; and the VmRSS of the parent and
# of each worker right after the run. Then it measures startup: exec until 2
# distinct worker pids have answered on fresh connections (bench/cmd/startup),
# STARTUP_N times, interleaved too.
#
# Usage:  cd bench && ./run.sh
# Env:    ROUNDS=3  DURATION=10 (seconds of each measured wrk run)
#         WARMUP=1 (seconds, discarded)  CONNS=64  THREADS=1  STARTUP_N=10
#         PEERS="nethttp forkline-nethttp ..."  FORKLINE_MODE=reuseport
#         RESULTS=results.md (file written next to this script; "" = none)
#         KEEP=1 keeps the temp dir (binaries, raw wrk output, logs)
#         NEW_CONN=1 sends "Connection: close": a new connection per request,
#           which shows the cost of Node's primary accepting every connection
#         SERVER_CPUS=0 WRK_CPUS=1 (taskset CPU lists; unset = any CPU): pin the
#           servers and wrk apart, a stand-in for clients on another machine
#
# Peers left out of the default PEERS, for checks:
#   nethttp-tcp        the baseline with GODEBUG=multipathtcp=0: plain TCP
#                      instead of Go's default Multipath TCP listener
#   forkline-nethttp-2p  forkline + net/http, 2 workers of 2 Ps each
#                      (GOMAXPROCS=2) instead of 1
#
# On a shared, noisy machine more and shorter rounds (ROUNDS=8 DURATION=5)
# give steadier medians; each run's table row says how much CPU other
# processes took meanwhile, and the ratios are also given over the
# undisturbed rounds only.
#
# Why -t1 -c64 on 2 cores: wrk shares the machine with the server, so one
# wrk thread (at most one core) leaves the other core and the rest of the
# first to the 2 workers; 64 keep-alive connections keep ~32 requests in
# flight per worker, enough to saturate both without measuring queueing.
# (Measured here for net/http: -t1 -c16/-c64/-c256 gave 59k/56k/52k req/s,
# -t2 -c64 62k: the choice does not change the ranking, only the level.)
#
# Every process it starts gets its own session/process group (setsid) and is
# stopped by signalling that group only, SIGTERM first and SIGKILL after 10s.
# (forkline puts each worker in a process group of its own: the parent drains
# them; the script then checks that the workers it saw are gone too.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
DURATION=${DURATION%s}
WARMUP=${WARMUP:-1}
WARMUP=${WARMUP%s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
STARTUP_N=${STARTUP_N:-10}
FORKLINE_MODE=${FORKLINE_MODE:-reuseport}
NEW_CONN=${NEW_CONN:-}
SERVER_CPUS=${SERVER_CPUS:-}
WRK_CPUS=${WRK_CPUS:-}
wrk_cmd=(wrk)
[[ -z $WRK_CPUS ]] || wrk_cmd=(taskset -c "$WRK_CPUS" wrk)
wrk_extra=()
[[ -z $NEW_CONN ]] || wrk_extra=(-H "Connection: close")
PEERS_SET=${PEERS:+1}
PEERS=${PEERS:-nethttp forkline-nethttp forkline-nethttp-1w fasthttp-prefork forkline-fasthttp nginx node-cluster}
WORKERS=2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
RESULTS=${RESULTS-$here/results.md}
[[ -z $RESULTS || $RESULTS == /* ]] || RESULTS=$here/$RESULTS
invocation="cd bench && ${PEERS_SET:+PEERS=\"$PEERS\" }ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS STARTUP_N=$STARTUP_N${NEW_CONN:+ NEW_CONN=1}${SERVER_CPUS:+ SERVER_CPUS=$SERVER_CPUS}${WRK_CPUS:+ WRK_CPUS=$WRK_CPUS} ./run.sh"

for v in ROUNDS DURATION WARMUP CONNS THREADS STARTUP_N; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || { echo "run.sh: $v must be a positive integer, got '${!v}'" >&2; exit 2; }
done

has_peer() { [[ " $PEERS " == *" $1 "* ]]; }

# ---- tools ------------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
missing=()
command -v wrk >/dev/null || missing+=(wrk)
if has_peer nginx; then command -v nginx >/dev/null || missing+=(nginx); fi
if ((${#missing[@]})); then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing ${missing[*]} with apt-get"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	else
		echo "run.sh: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
fi
for t in go ss ps setsid pgrep $([[ -n $SERVER_CPUS$WRK_CPUS ]] && echo taskset); do
	command -v $t >/dev/null || { echo "run.sh: $t is required" >&2; exit 1; }
done
if has_peer node-cluster; then
	command -v node >/dev/null || { echo "run.sh: node is required for the node-cluster peer (or leave it out of PEERS)" >&2; exit 1; }
fi

work=$(mktemp -d /tmp/forkline-bench.XXXXXX)
chmod 755 "$work" # nginx workers may run as another user
bin=$work/bin
raw=$work/raw
logs=$work/logs
mkdir -p "$bin" "$raw" "$logs"
samples=$raw/samples.tsv
: >"$samples"

# ---- process handling -------------------------------------------------------
started=() # leaders of the process groups this script created

cleanup() {
	stop_started
	if [[ -n ${KEEP:-} ]]; then log "raw data kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# peer_cmd name port: sets cmd=(...), ndistinct (pids that must answer) and
# nchildren (worker processes expected; 0 = the process serves itself).
peer_cmd() {
	local name=$1 port=$2 addr=127.0.0.1:$2
	ndistinct=$WORKERS
	nchildren=$WORKERS
	case $name in
	nethttp) cmd=("$bin/nethttp" -addr "$addr"); ndistinct=1; nchildren=0 ;;
	nethttp-tcp) cmd=(env GODEBUG=multipathtcp=0 "$bin/nethttp" -addr "$addr"); ndistinct=1; nchildren=0 ;;
	forkline-nethttp) cmd=("$bin/forkline-nethttp" -addr "$addr" -workers "$WORKERS" -mode "$FORKLINE_MODE") ;;
	forkline-nethttp-2p) cmd=(env GOMAXPROCS=2 "$bin/forkline-nethttp" -addr "$addr" -workers "$WORKERS" -mode "$FORKLINE_MODE") ;;
	forkline-nethttp-1w) cmd=("$bin/forkline-nethttp" -addr "$addr" -workers 1 -mode "$FORKLINE_MODE"); ndistinct=1; nchildren=1 ;;
	forkline-fasthttp) cmd=("$bin/forkline-fasthttp" -addr "$addr" -workers "$WORKERS" -mode "$FORKLINE_MODE") ;;
	fasthttp-prefork) cmd=("$bin/fasthttpprefork" -addr "$addr" -workers "$WORKERS") ;;
	node-cluster) cmd=(node "$here/peers/node-cluster.js" -addr "$addr" -workers "$WORKERS") ;;
	nginx)
		local dir=$work/nginx/$port
		nginx_conf "$dir" "$port" "keepalive_requests 1000000"
		cmd=(nginx -p "$dir" -c "$dir/nginx.conf")
		;;
	*) echo "run.sh: unknown peer $name" >&2; return 1 ;;
	esac
	[[ -z $SERVER_CPUS ]] || cmd=(taskset -c "$SERVER_CPUS" "${cmd[@]}")
}

# start_peer name port logfile: starts it in a new session; sets pid.
start_peer() {
	peer_cmd "$1" "$2"
	start_session "$3" "$1" "${cmd[@]}"
}

cpu_ms() { # utime+stime of pid $1 in ms
	local f
	f=$(sed 's/^.*) //' "/proc/$1/stat")
	awk -v hz="$(getconf CLK_TCK)" '{ print ($12 + $13) * 1000 / hz }' <<<"$f"
}
sum_cpu_ms() { # utime+stime of all pids, in ms
	local p t=0
	for p; do t=$(awk -v a="$t" -v b="$(cpu_ms "$p")" 'BEGIN { print a + b }'); done
	echo "$t"
}
# busy_ms: CPU time the whole machine spent in user, nice, system and steal
# (irq and softirq time are accounted apart from processes here, so they are
# left out on both sides).
busy_ms() { awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { print ($2 + $3 + $4 + $9) * 1000 / hz }' /proc/stat; }
# reaped_ms: CPU time of this script's reaped children (wrk, and the helpers).
reaped_ms() { sed 's/^.*) //' "/proc/$$/stat" | awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000 / hz }'; }
# ctx_switches pid...: voluntary and involuntary context switches of every
# thread of the processes, summed.
ctx_switches() {
	local p
	for p; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
		awk '/^voluntary_ctxt_switches:/ { v += $2 } /^nonvoluntary_ctxt_switches:/ { n += $2 } END { print v + 0, n + 0 }'
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- build --------------------------------------------------------------------
log "building into $bin"
if has_peer forkline-nethttp || has_peer forkline-nethttp-1w || has_peer forkline-nethttp-2p; then (cd "$root" && go build -o "$bin/forkline-nethttp" ./examples/hello); fi
if has_peer forkline-fasthttp; then (cd "$root/examples/fasthttp" && go build -o "$bin/forkline-fasthttp" .); fi
(cd "$here" && go build -o "$bin/" ./peers/nethttp ./peers/fasthttpprefork ./cmd/startup ./cmd/report)

# ---- throughput ---------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
read -ra peer_list <<<"$PEERS"
reversed=()
for ((i = ${#peer_list[@]} - 1; i >= 0; i--)); do reversed+=("${peer_list[i]}"); done
for ((round = 1; round <= ROUNDS; round++)); do
	# Odd rounds in PEERS order, even rounds reversed (A B B A): a peer and
	# its baseline trade places, so a steady drift in the machine's load
	# does not always favour the one that runs first.
	order=("${peer_list[@]}")
	((round % 2)) || order=("${reversed[@]}")
	for name in "${order[@]}"; do
		port=$(free_port)
		plog=$logs/$name.log
		start_peer "$name" "$port" "$plog"
		if ! "$bin/startup" -addr "127.0.0.1:$port" -distinct "$ndistinct" -timeout 30s >/dev/null 2>>"$plog"; then
			echo "run.sh: $name did not get $ndistinct workers serving on :$port; its log:" >&2
			tail -n 20 "$plog" >&2
			exit 1
		fi
		workers=()
		if ((nchildren)); then
			mapfile -t workers < <(pgrep -P "$pid" | sort -n)
			((${#workers[@]} == nchildren)) || log "warning: $name has ${#workers[@]} child processes, expected $nchildren"
		fi
		url=http://127.0.0.1:$port/
		"${wrk_cmd[@]}" -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "${wrk_extra[@]}" "$url" >/dev/null
		servers=("${workers[@]}")
		((${#servers[@]})) || servers=("$pid")
		w0=$(sum_cpu_ms "${servers[@]}")
		read -r sv0 sn0 < <(ctx_switches "${servers[@]}")
		c0=$(cpu_ms "$pid")
		b0=$(busy_ms)
		k0=$(reaped_ms)
		t0=$(now_ms)
		"${wrk_cmd[@]}" --latency -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "${wrk_extra[@]}" "$url" >"$raw/wrk.$name.$round.txt" &
		wrk_pid=$!
		# How the kernel spread wrk's connections over the workers.
		sleep 1
		conns=$(ss -Htnp state established "( sport = :$port )" | grep -o 'pid=[0-9]*' | sort | uniq -c | awk '{ print $1 }' | sort -n | tr '\n' ' ' || true)
		wait "$wrk_pid"
		t1=$(now_ms)
		k1=$(reaped_ms)
		b1=$(busy_ms)
		c1=$(cpu_ms "$pid")
		w1=$(sum_cpu_ms "${servers[@]}")
		read -r sv1 sn1 < <(ctx_switches "${servers[@]}")
		# CPU that other processes on the machine took during the run: all
		# busy CPU time minus the servers' and wrk's (and this script's own).
		ours=$(awk -v w="$((${w1%.*} - ${w0%.*}))" -v c="$((${c1%.*} - ${c0%.*}))" -v k="$((${k1%.*} - ${k0%.*}))" -v single="${#workers[@]}" \
			'BEGIN { print w + k + (single ? c : 0) }')
		other=$(awk -v b="$((${b1%.*} - ${b0%.*}))" -v o="$ours" -v t="$((t1 - t0))" -v n="$(nproc)" \
			'BEGIN { v = 100 * (b - o) / (t * n); printf "%.1f", (v < 0 ? 0 : v) }')
		rss=$(rss_kb "$pid")
		for w in "${workers[@]}"; do rss+=" $(rss_kb "$w")"; done
		printf 'cpu\t%s\t%d\t%s\t%d\n' "$name" "$round" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" $((t1 - t0)) >>"$samples"
		printf 'wcpu\t%s\t%d\t%s\n' "$name" "$round" "$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" >>"$samples"
		printf 'csw\t%s\t%d\t%d\t%d\n' "$name" "$round" $((sv1 - sv0)) $((sn1 - sn0)) >>"$samples"
		printf 'rss\t%s\t%d\t%s\n' "$name" "$round" "${rss// /$'\t'}" >>"$samples"
		[[ -z ${conns// /} ]] || printf 'conns\t%s\t%d\t%s\n' "$name" "$round" "$(echo $conns | tr ' ' '\t')" >>"$samples"
		printf 'other\t%s\t%d\t%s\n' "$name" "$round" "$other" >>"$samples"
		log "round $round/$ROUNDS $name: $(awk '/^Requests\/sec/ { print $2 }' "$raw/wrk.$name.$round.txt") req/s, parent cpu $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }') ms, other processes ${other}% of the CPUs"
		if [[ $name == forkline-* ]] && ! grep -q 'msg="cluster ready"' "$plog"; then
			log "warning: $name never logged msg=\"cluster ready\""
		fi
		stop_group "$pid" "${workers[@]}"
	done
done
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- startup ------------------------------------------------------------------
for ((i = 1; i <= STARTUP_N; i++)); do
	for name in $PEERS; do
		port=$(free_port)
		peer_cmd "$name" "$port"
		if ms=$("$bin/startup" -addr "127.0.0.1:$port" -n 1 -distinct "$ndistinct" -log "$logs/startup.$name.log" -- "${cmd[@]}" 2>>"$logs/startup.$name.log"); then
			printf 'startup\t%s\t%d\t%s\n' "$name" "$i" "$ms" >>"$samples"
		else
			log "startup sample $i of $name failed; see below"
			tail -n 5 "$logs/startup.$name.log" >&2
		fi
	done
	log "startup sample $i/$STARTUP_N done"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report -------------------------------------------------------------------
table=$("$bin/report" -raw "$raw")
fasthttp_version=$(cd "$here" && go list -m -f '{{.Version}}' github.com/valyala/fasthttp)
{
	echo "# forkline benchmark results"
	echo
	echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- Command: \`$invocation\`"
	echo "- Kernel: \`$(uname -r)\`, CPUs (nproc): $(nproc), $(go version | cut -d' ' -f3-), node $(command -v node >/dev/null && node --version || echo -), $(nginx -v 2>&1 | sed 's/^nginx version: //'), fasthttp $fasthttp_version, forkline mode $FORKLINE_MODE"
	echo "- Load: \`wrk --latency -t$THREADS -c$CONNS -d${DURATION}s${NEW_CONN:+ -H 'Connection: close'} http://127.0.0.1:<port>/\` after a ${WARMUP}s warm-up that is discarded; $ROUNDS interleaved rounds (even rounds in reverse order), a fresh server process per run; 2 workers per peer; $(if [[ -n $SERVER_CPUS$WRK_CPUS ]]; then echo "servers on CPUs ${SERVER_CPUS:-any}, wrk on CPUs ${WRK_CPUS:-any} (taskset)"; else echo "wrk and the servers share the same $(nproc) CPUs"; fi)"
	echo "- Load average (1/5/15 min): before $load_before, after throughput $load_mid, after startup $load_after"
	echo
	echo "$table"
	echo
	echo "How to read it:"
	echo
	echo "- *parent CPU during run*: utime+stime of the parent/primary/master process (from \`/proc/<pid>/stat\`, 10 ms ticks) over the measured wrk run, and that as a share of the run's wall time. forkline's parent is not in the request path, so it should stay at ~0. Node's primary accepts every connection in its default round-robin mode: $([[ -n $NEW_CONN ]] && echo "with a new connection per request (NEW_CONN=1) that shows." || echo "wrk keeps its $CONNS connections open, so little shows here (NEW_CONN=1 shows it).")"
	echo "- *worker CPU per request*: utime+stime of all workers (of the one process for net/http) over the measured run, divided by the requests wrk completed; less sensitive than req/s to CPU taken by other jobs on a shared machine (not immune: caches and SMT siblings are shared too)."
	echo "- *worker context switches per request*: voluntary and involuntary context switches of every thread of the workers (of the one process for net/http) over the measured run, from \`/proc/<pid>/task/*/status\`, divided by the requests wrk completed."
	echo "- *connections per worker*: wrk's $CONNS connections as the kernel spread them over the worker processes (by \`ss\`, 1 s into the run), median over rounds, smallest first."
	echo "- *RSS*: VmRSS right after the measured run, median over rounds; workers are listed smallest first."
	echo "- *startup*: measured from outside by \`bench/cmd/startup\`, from just before exec until $WORKERS distinct worker pids have answered on fresh connections (1 pid for the single net/http process and for the 1-worker control); $STARTUP_N samples per peer, interleaved."
	echo "- fasthttp/prefork starts runtime.GOMAXPROCS(0) children; its peer sets the master's GOMAXPROCS to 2 with runtime.GOMAXPROCS (each child then runs with GOMAXPROCS=1, set by fasthttp/prefork). fasthttp/prefork passes no worker index, so its body says worker=0."
	echo "- *other processes* (per-run table): CPU time that processes other than the servers, wrk and this script took during the run, as a share of all CPUs (busy time from \`/proc/stat\` minus theirs). Runs where it is high are disturbed."
	echo "- The machine is shared and noisy: trust ratios of interleaved rounds more than absolute figures. The load average includes the benchmark itself (wrk plus the busy server threads count for about 3)."
} >"$work/results.md"
cat "$work/results.md"
if [[ -n $RESULTS ]]; then
	cp "$work/results.md" "$RESULTS"
	log "wrote $RESULTS"
fi
