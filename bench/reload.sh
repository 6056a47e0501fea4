#!/usr/bin/env bash
# bench/reload.sh — the benchmark behind `make bench-reload`: what a
# zero-downtime reload costs the clients, forkline against `nginx -s reload`.
#
# Three runs of bench/cmd/reloadbench, each against a fresh server with 2
# workers on 127.0.0.1:
#
#   forkline    examples/hello; reload = SIGHUP to the parent, complete when
#               the parent logs msg="reloaded"
#   keepalive   the same, with clients that keep their connections open
#               (the server's "Connection: close" makes them reconnect)
#   nginx       worker_processes 2, listen ... reuseport, return 200 "Hello...";
#               reload = `nginx -p DIR -c CONF -s reload`; nginx gives no
#               ready signal, so the reload counts as ready once the command
#               has exited and 2 new worker processes run under the master
#
# Load: CLIENTS closed-loop clients, a new connection per request
# ("Connection: close", the way the nginx bar was measured) except in the
# keepalive run; WARMUP s, then STEADY s of steady state, then RELOADS
# reloads, each after a random pause of 250-500 ms, then 0.5 s more.
# A reload's window runs from its trigger (signal sent, command started) until
# every worker of the old generation has exited.
#
# Prints, one per line (forkline unless prefixed):
#   reload-failed <n>         failed requests over the whole run
#   reload-requests <n>       requests over the whole run (warm-up, steady, reloads)
#   reload-p99-ms <x>         p99 latency of the requests overlapping a reload window
#   steady-p99-ms <x>         p99 latency in the steady phase
#   reload-phase2-p99-ms <x>  p99 latency of every request after the steady phase
#   reload-200ms-p99-ms <x>   p99 latency of the requests overlapping the first
#                             200 ms after each trigger (the same span for nginx)
#   nginx-reload-failed, nginx-reload-requests, nginx-reload-p99-ms,
#   nginx-steady-p99-ms, nginx-reload-phase2-p99-ms, nginx-reload-200ms-p99-ms
#   keepalive-reload-failed, keepalive-reload-requests, keepalive-reload-p99-ms,
#   keepalive-steady-p99-ms
# and writes them, with the full reports, to reload-results.md.
#
# Usage:  cd bench && ./reload.sh
# Env:    RELOADS=20 CLIENTS=32 STEADY=3 WARMUP=0.5 (seconds) TIMEOUT=2s
#         RUNS="forkline keepalive nginx"
#         RESULTS=reload-results.md (next to this script; "" = none)
#         KEEP=1 keeps the temp dir (binaries, logs, raw reports)
#
# Every process it starts gets its own session (setsid); it is stopped by
# SIGTERM to that group, then its workers are waited for (forkline's run in
# process groups of their own) and SIGKILLed by pid after 10 s.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

RELOADS=${RELOADS:-20}
CLIENTS=${CLIENTS:-32}
STEADY=${STEADY:-3}
WARMUP=${WARMUP:-0.5}
TIMEOUT=${TIMEOUT:-2s}
RUNS=${RUNS:-forkline keepalive nginx}
WORKERS=2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
RESULTS=${RESULTS-$here/reload-results.md}
[[ -z $RESULTS || $RESULTS == /* ]] || RESULTS=$here/$RESULTS
invocation="cd bench && RELOADS=$RELOADS CLIENTS=$CLIENTS STEADY=$STEADY WARMUP=$WARMUP TIMEOUT=$TIMEOUT ./reload.sh"

for v in RELOADS CLIENTS; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || { echo "reload.sh: $v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
for v in STEADY WARMUP; do
	[[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "reload.sh: $v must be a number of seconds, got '${!v}'" >&2; exit 2; }
done

has_run() { [[ " $RUNS " == *" $1 "* ]]; }

# ---- tools ------------------------------------------------------------------
PATH=$PATH:/usr/sbin:/sbin
if has_run nginx && ! command -v nginx >/dev/null; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing nginx with apt-get"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
	else
		echo "reload.sh: nginx is missing; install with: sudo apt-get install -y nginx" >&2
		exit 1
	fi
fi
for t in go ss ps setsid; do
	command -v $t >/dev/null || { echo "reload.sh: $t is required" >&2; exit 1; }
done

work=$(mktemp -d /tmp/forkline-reload.XXXXXX)
chmod 755 "$work" # nginx workers run as nobody
bin=$work/bin
raw=$work/raw
mkdir -p "$bin" "$raw"

# ---- process handling -------------------------------------------------------
started=() # leaders of the process groups this script created


proc_state() { # pid: "<state> <starttime>" from /proc/<pid>/stat, or nothing
	{ sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null || true; } | awk '{ print $1, $20 }'
}

alive() { # pid starttime: is that very process still running (not a zombie)?
	local st
	st=$(proc_state "$1")
	[[ -n $st && ${st%% *} != Z && ${st#* } == "$2" ]]
}

left_of() { # pid kid...: is anything left of the group or of the kids (pid:starttime)?
	local pid=$1 k
	shift
	if group_alive "$pid"; then return 0; fi
	for k; do
		if alive "${k%%:*}" "${k#*:}"; then return 0; fi
	done
	return 1
}

# stop_server pid: SIGTERM to its process group, then wait for the group and
# for the children it had (which may live in groups of their own); SIGKILL
# what is left after 10 s, by group and by pid.
stop_server() {
	local pid=$1 i kids=() k st
	for k in $(ps -o pid= --ppid "$pid" 2>/dev/null || true); do
		st=$(proc_state "$k")
		if [[ -n $st ]]; then kids+=("$k:${st#* }"); fi
	done
	kill -TERM -- "-$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		if ! left_of "$pid" "${kids[@]}"; then break; fi
		sleep 0.1
	done
	if left_of "$pid" "${kids[@]}"; then
		log "server $pid still running 10s after SIGTERM; sending SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null || true
		for k in "${kids[@]}"; do
			if alive "${k%%:*}" "${k#*:}"; then kill -KILL "${k%%:*}" 2>/dev/null || true; fi
		done
		for ((i = 0; i < 50; i++)); do
			if ! left_of "$pid" "${kids[@]}"; then break; fi
			sleep 0.1
		done
	fi
	wait "$pid" 2>/dev/null || true
	local left=() p
	for p in "${started[@]}"; do
		if [[ $p != "$pid" ]]; then left+=("$p"); fi
	done
	started=("${left[@]}")
}

cleanup() {
	local pid
	for pid in "${started[@]}"; do stop_server "$pid"; done
	true
	if [[ -n ${KEEP:-} ]]; then log "raw data kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# start logfile cmd...: starts cmd in a new session; sets pid.
start() { start_session "$1" "$2" "${@:2}"; }


# ---- build ------------------------------------------------------------------
log "building examples/hello and reloadbench"
(cd "$root" && go build -o "$bin/hello" ./examples/hello)
(cd "$here" && go build -o "$bin/reloadbench" ./cmd/reloadbench)

bench_args=(-clients "$CLIENTS" -reloads "$RELOADS" -steady "${STEADY}s" -warmup "${WARMUP}s" -timeout "$TIMEOUT" -workers "$WORKERS")
failures=0

# run name: one server, one reloadbench run; raw/<name>.kv and .report.
run() {
	local name=$1 port rc=0 dir load_before
	port=$(free_port)
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	case $name in
	forkline | keepalive)
		local logf=$raw/$name.server.log
		start "$logf" "$bin/hello" -addr "127.0.0.1:$port" -workers "$WORKERS"
		local extra=()
		[[ $name == keepalive ]] && extra=(-keepalive)
		log "$name: hello pid $pid on 127.0.0.1:$port"
		"$bin/reloadbench" "${bench_args[@]}" "${extra[@]}" -addr "127.0.0.1:$port" -pid "$pid" \
			-log "$logf" -ready 'msg=reloaded' >"$raw/$name.kv" 2>"$raw/$name.report" || rc=$?
		;;
	nginx)
		dir=$work/nginx
		NGINX_LOG_LEVEL=notice nginx_conf "$dir" "$port"
		start "$raw/nginx.server.log" nginx -p "$dir" -c "$dir/nginx.conf"
		log "nginx: master pid $pid on 127.0.0.1:$port"
		"$bin/reloadbench" "${bench_args[@]}" -addr "127.0.0.1:$port" -pid "$pid" \
			-cmd "nginx -p $dir -c $dir/nginx.conf -s reload" >"$raw/$name.kv" 2>"$raw/$name.report" || rc=$?
		;;
	esac
	stop_server "$pid"
	echo "  load average (1/5/15 min): before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw/$name.report"
	if ((rc != 0)); then
		log "$name: reloadbench exited $rc"
		failures=$((failures + 1))
	fi
	sed 's/^/    /' "$raw/$name.report" >&2
}

for r in $RUNS; do
	run "$r"
done

# ---- results ----------------------------------------------------------------
get() { # run key
	awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print "-" }' "$raw/$1.kv" 2>/dev/null || echo -
}
lines=()
if has_run forkline; then
	lines+=("reload-failed $(get forkline failed)"
		"reload-requests $(get forkline requests)"
		"reload-p99-ms $(get forkline reload-p99-ms)"
		"steady-p99-ms $(get forkline steady-p99-ms)"
		"reload-phase2-p99-ms $(get forkline phase2-p99-ms)"
		"reload-200ms-p99-ms $(get forkline fixed-p99-ms)")
fi
if has_run nginx; then
	lines+=("nginx-reload-failed $(get nginx failed)"
		"nginx-reload-requests $(get nginx requests)"
		"nginx-reload-p99-ms $(get nginx reload-p99-ms)"
		"nginx-steady-p99-ms $(get nginx steady-p99-ms)"
		"nginx-reload-phase2-p99-ms $(get nginx phase2-p99-ms)"
		"nginx-reload-200ms-p99-ms $(get nginx fixed-p99-ms)")
fi
if has_run keepalive; then
	lines+=("keepalive-reload-failed $(get keepalive failed)"
		"keepalive-reload-requests $(get keepalive requests)"
		"keepalive-reload-p99-ms $(get keepalive reload-p99-ms)"
		"keepalive-steady-p99-ms $(get keepalive steady-p99-ms)")
fi
printf '%s\n' "${lines[@]}"

{
	echo "# Reload benchmark"
	echo
	echo "- Date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "- Command: \`$invocation\`"
	echo "- Kernel: \`$(uname -r)\`, CPUs (nproc): $(nproc), $(go version | cut -d' ' -f3-), $(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "- forkline: $(cd "$root" && GIT_OPTIONAL_LOCKS=0 git describe --always --dirty 2>/dev/null || echo unknown) (\"dirty\": uncommitted changes in the working tree were measured)"
	echo "- Load: $CLIENTS closed-loop clients (bench/cmd/reloadbench), HTTP/1.1 GET /, per-request timeout $TIMEOUT; a new connection per request (\`Connection: close\`) except in the keepalive run; ${WARMUP}s warm-up, ${STEADY}s steady, $RELOADS reloads each after a random 250-500 ms pause, 0.5 s tail; the runs one after the other (forkline, keepalive, nginx by default), a fresh server for each; client and servers share the same $(nproc) CPUs; 2 workers per server"
	echo
	echo '```'
	printf '%s\n' "${lines[@]}"
	echo '```'
	echo
	echo "How to read it:"
	echo
	echo "- *failed*: requests that got no \`200 Hello ...\` answer within the timeout (refused, reset, EOF before the answer, timeout, another status), over the whole run: warm-up, steady phase and reloads. *requests*: every request of the run."
	echo "- *reload window*: from the reload's trigger (SIGHUP sent; \`nginx -s reload\` started) until every worker of the old generation has exited (polled every 2 ms in /proc). *reload-p99-ms*: p99 latency of the successful requests whose interval [start, end] overlaps a reload window. *phase2-p99-ms*: every successful request started after the steady phase (windows and the pauses between them). *reload-200ms-p99-ms*: successful requests overlapping the first 200 ms after each trigger, a span that is the same for both servers (forkline's windows last ~10-40 ms, nginx's ~110 ms: its master waits 100 ms after starting the new workers before it tells the old ones to quit). *steady-p99-ms*: successful requests started in the steady phase. Latency runs from before connect to the last byte of the body."
	echo "- Ready: forkline when the parent logs \`msg=reloaded\` (the whole new generation accepts); nginx has no such signal, so when \`nginx -s reload\` has exited and $WORKERS new worker processes run under the master."
	echo "- keepalive: a \`Connection: close\` answer makes the client reconnect, not a failure; so does an idle connection found closed by the server before reuse (checked with a non-blocking \`recv(MSG_PEEK)\`, as net/http's Transport notices it); a failure on a connection that had served requests before (\`reused conn true\` in the report) is one. The clients send their next request at once, so connections are never idle for long."
	echo "- The machine is shared and noisy: compare runs made one after the other."
	echo
	for r in $RUNS; do
		echo "## $r"
		echo
		echo '```'
		cat "$raw/$r.report"
		echo '```'
		echo
	done
} >"$work/reload-results.md"
if [[ -n $RESULTS ]]; then
	cp "$work/reload-results.md" "$RESULTS"
	log "wrote $RESULTS"
fi
((failures == 0)) || { log "$failures run(s) failed"; exit 1; }
