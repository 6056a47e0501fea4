# Shell functions shared by the benchmark scripts (run.sh, reload.sh,
# threads.sh).
# Source it after setting WORKERS; the caller's $0 names it in messages.

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

group_alive() { # any non-zombie process left in process group $1?
	ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

free_port() { # a port below the ephemeral range with no socket on it
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		if [[ -z $(ss -Htan "( sport = :$p or dport = :$p )") ]]; then
			echo "$p"
			return
		fi
	done
	echo "$(basename "$0"): no free port found" >&2
	return 1
}

# nginx_conf dir port [http directives...]: writes dir/nginx.conf, a
# 2-worker (WORKERS) nginx answering "Hello ..." on 127.0.0.1:port with
# reuseport, running in the foreground with everything under dir.
nginx_conf() {
	local dir=$1 port=$2 user="" extra
	shift 2
	extra=""
	(($# == 0)) || extra=$(printf '%s; ' "$@")
	mkdir -p "$dir/logs"
	[[ $(id -u) == 0 ]] && user="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
	cat >"$dir/nginx.conf" <<-EOF
		$user
		worker_processes $WORKERS;
		daemon off;
		master_process on;
		pid $dir/nginx.pid;
		error_log $dir/logs/error.log ${NGINX_LOG_LEVEL:-warn};
		events { worker_connections 4096; }
		http {
		    access_log off;
		    client_body_temp_path $dir/client_body;
		    proxy_temp_path $dir/proxy;
		    fastcgi_temp_path $dir/fastcgi;
		    uwsgi_temp_path $dir/uwsgi;
		    scgi_temp_path $dir/scgi;
		    $extra
		    server {
		        listen 127.0.0.1:$port reuseport;
		        default_type text/plain;
		        location / { return 200 "Hello from worker=0 pid=\$pid gen=0\n"; }
		    }
		}
	EOF
}

# start_session logfile name cmd...: starts cmd in a new session (a process
# group of its own, so that it can be stopped as a group) with its output
# appended to logfile; sets pid and appends it to the array started.
start_session() {
	local logf=$1 name=$2
	shift 2
	setsid "$@" </dev/null >>"$logf" 2>&1 &
	pid=$!
	started+=("$pid")
	# setsid execs in place when it is not a group leader (a background job of
	# a non-interactive shell is not), so $! is the server and its group id.
	local i
	for ((i = 0; i < 50; i++)); do
		[[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]] && return 0
		sleep 0.01
	done
	echo "$(basename "$0"): $name (pid $pid) is not a process group leader" >&2
	return 1
}

running() { # is pid $1 alive and not a zombie?
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[[ -n $st && $st != Z ]]
}

# wait_while tries cmd...: runs cmd every 0.1 s while it succeeds, at most
# tries times; fails if cmd still succeeds at the end.
wait_while() {
	local tries=$1 i
	shift
	for ((i = 0; i < tries; i++)); do
		"$@" || return 0
		sleep 0.1
	done
	! "$@"
}

stop_group() { # pid [descendant pids that must be gone afterwards]
	local pid=$1 p
	kill -TERM -- "-$pid" 2>/dev/null || true
	if ! wait_while 100 group_alive "$pid"; then
		log "process group $pid still running 10s after SIGTERM; sending SIGKILL"
		kill -KILL -- "-$pid" 2>/dev/null || true
		wait_while 50 group_alive "$pid" || true
	fi
	wait "$pid" 2>/dev/null || true
	shift
	for p; do
		if ! wait_while 50 running "$p"; then
			log "worker $p outlived its parent $pid by 5s; sending SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	local left=()
	for p in "${started[@]}"; do [[ $p == "$pid" ]] || left+=("$p"); done
	started=("${left[@]}")
}

# stop_started stops every process group this script started and that is
# still running (for an EXIT trap).
stop_started() {
	local pid
	for pid in "${started[@]}"; do
		group_alive "$pid" && stop_group "$pid"
	done
	return 0
}
