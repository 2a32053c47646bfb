#!/bin/sh
# SPDX-License-Identifier: MIT
# The gateway's cost: wrk straight at a fixed-response backend
# (bench-http-backend, run by vramd as a workload) and through the gateway
# (/w/bench/...), side by side in one run. Added latency is the p50
# difference with one connection; throughput is compared with many.
#
#   bench/gateway-bench.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS]
#   ROUNDS=N (default 1): each placement measured N times, alternating, with
#   the median ratio at the end (the shared placement depends on how the
#   scheduler spreads three busy processes over the cores, so one round can
#   be off by 15 %).
#   NGINX=0: leaves nginx out (by default it is measured when installed;
#   NGINX=/path/to/nginx names the binary).
#   MODE=nginx: only the gateway against nginx, in the shared placement;
#   with BASE=OTHER_BUILD_DIR a second vramd, built from other sources, in
#   front of the same backend process, in the same rounds (before/after).
#
# Targets (issue: gateway): p50 added <= 50 us, throughput >= 80 % of
# direct on a 2-core machine. Next to them, the floor: bench-relay, a proxy
# that does no work at all (one upstream connection per client, bytes
# copied both ways), in the same round three ways: epoll; epoll for
# readiness with the socket calls of each wake-up batched through io_uring;
# completion-driven io_uring. No user-space proxy over the kernel's sockets
# does less, so it shows how much of the gap is the gateway's own.
#
# And a proxy that is not zero-work but is what the gateway would be
# compared with: nginx (Debian's nginx-light) as a reverse proxy to the same
# backend, one worker, upstream keep-alive (keepalive 64, HTTP/1.1, no
# Connection header upstream), no access log; its config is written into
# the run's temporary directory and it runs as a child of this script.
# Target (issue 12): the gateway's throughput with CONNECTIONS connections
# does not fall below what it was against nginx (0.97x on the 2-core dev
# machine). In the default mode nginx is one more row of each round; in
# MODE=nginx every gateway run sits between two nginx runs and is divided
# by their mean, which gateway goes first alternates by round, and each
# run also gives what other processes took of the CPUs and the proxy's CPU
# time per request (QUIET=cores: the rounds summed up apart as quiet).
#
# Two placements are measured, each direct and through the gateway:
#  - shared: nothing pinned; wrk, vramd and the backend share every core, as
#    they would on a small machine;
#  - split (two or more cores): wrk alone on the last core, vramd and the
#    backend on the others. Through the gateway the server side then runs
#    two processes where the direct path runs one on the same cores.
set -eu
. "$(dirname "$0")/lib/vramd.sh"

BUILD=${1:-build}
DURATION=${2:-5}
CONNS=${3:-32}
VRAMD=$BUILD/src/daemon/bin/vramd
BACKEND=$BUILD/bench/bench-http-backend
RELAY=$BUILD/bench/bench-relay

command -v wrk >/dev/null || { echo "gateway-bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$VRAMD" ] || { echo "gateway-bench: $VRAMD is not built" >&2; exit 1; }
[ -x "$BACKEND" ] || { echo "gateway-bench: $BACKEND is not built" >&2; exit 1; }
[ -x "$RELAY" ] || { echo "gateway-bench: $RELAY is not built" >&2; exit 1; }
BACKEND=$(cd "$(dirname "$BACKEND")" && pwd)/$(basename "$BACKEND")
MODE=${MODE:-all}
BASE=${BASE:-}
BASE_VRAMD=
if [ -n "$BASE" ]; then
	[ "$MODE" = nginx ] || { echo "gateway-bench: BASE needs MODE=nginx" >&2; exit 1; }
	BASE_VRAMD=$BASE/src/daemon/bin/vramd
	[ -x "$BASE_VRAMD" ] || { echo "gateway-bench: $BASE_VRAMD is not built" >&2; exit 1; }
fi
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ "$NGINX" = 0 ] || [ -x "$NGINX" ] || {
	[ "$MODE" = nginx ] && { echo "gateway-bench: nginx is not installed (apt-get install nginx-light)" >&2; exit 1; }
	echo "gateway-bench: no nginx ($NGINX): its rows are left out (apt-get install nginx-light)" >&2
	NGINX=0
}

DIR=$(mktemp -d /tmp/vramd-gwbench-XXXXXX)
PID=
BASE_PID=
NGINX_PID=
RELAY_PIDS=
cleanup() {
	for p in $RELAY_PIDS; do kill "$p" 2>/dev/null || true; done
	bench_stop "$NGINX_PID"
	bench_stop "$BASE_PID"
	bench_stop "$PID"
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

bench_write_config "$DIR/bench.yaml" "[$BACKEND, --port, \"\${PORT}\"]" "    health: { tcp: true }"

NCPU=$(nproc)
PIN_D=
PIN_W=
bench_start_vramd gateway-bench 1x80GiB
# The first request starts the backend (lazy start through the gateway).
curl -sf "$URL/w/bench/" >/dev/null || { echo "gateway-bench: the backend did not start" >&2; cat "$DIR/vramd.log" >&2; exit 1; }
BPORT=$(curl -sf "$URL/api/workloads/bench" | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
DIRECT=http://127.0.0.1:$BPORT/v1/bench
GATEWAY=$URL/w/bench/v1/bench

# "45.00us" / "1.20ms" / "2.00s" -> microseconds
to_us() {
	echo "$1" | awk '{ v = $1 + 0; if ($1 ~ /us$/) print v; else if ($1 ~ /ms$/) print v * 1000; else if ($1 ~ /s$/) print v * 1000000; else print v }'
}
run_wrk() { # url conns -> "rps p50_us"
	out=$($PIN_W wrk -t1 -c"$2" -d"${DURATION}s" --latency "$1")
	if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
		echo "gateway-bench: wrk reported errors for $1:" >&2
		echo "$out" >&2
	fi
	rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
	p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
	echo "$rps $(to_us "$p50")"
}

BACKEND_PID=$(pgrep -f "^$BACKEND --port $BPORT" | head -n 1)

# nginx in front of the same backend. Sets NGINX_URL, or "-" without nginx.
NGINX_URL=-
if [ "$NGINX" != 0 ]; then
	NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	mkdir -p "$DIR/nginx"
	cat >"$DIR/nginx/nginx.conf" <<EOC
worker_processes 1;
daemon off;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path $DIR/nginx/body;
	proxy_temp_path $DIR/nginx/proxy;
	fastcgi_temp_path $DIR/nginx/fastcgi;
	uwsgi_temp_path $DIR/nginx/uwsgi;
	scgi_temp_path $DIR/nginx/scgi;
	upstream backend {
		server 127.0.0.1:$BPORT;
		keepalive 64;
	}
	server {
		listen 127.0.0.1:$NPORT;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
EOC
	"$NGINX" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -e "$DIR/nginx/error.log" &
	NGINX_PID=$!
	bench_wait "gateway-bench: nginx" "http://127.0.0.1:$NPORT/v1/bench" "$NGINX_PID" "$DIR/nginx/error.log"
	NGINX_URL=http://127.0.0.1:$NPORT/v1/bench
	NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
fi

# The second vramd (BASE). Its workload is no process of its own (sleep) on
# the port of the backend that the first vramd started, so that both
# gateways and nginx reach one and the same backend process.
BASE_URL=-
if [ -n "$BASE" ]; then
	bench_write_config "$DIR/base.yaml" '[/bin/sleep, "100000"]' "    port: $BPORT
    health: { tcp: true, port_owner: any }"
	_url=$URL _port=$PORT _pid=$PID
	VRAMD=$BASE_VRAMD bench_start_vramd gateway-bench 1x80GiB base
	BASE_PID=$PID BASE_GATEWAY=$URL/w/bench/v1/bench
	URL=$_url PORT=$_port PID=$_pid
	curl -sf "$BASE_GATEWAY" >/dev/null || { echo "gateway-bench: the base gateway does not reach the backend" >&2; cat "$DIR/base.log" >&2; exit 1; }
	BASE_URL=$BASE_GATEWAY
fi

# The zero-work relays in front of the same backend. Sets RELAY_URL to its
# URL, or to "-" when the mode is not built or fails.
start_relay() { # mode
	"$RELAY" --mode "$1" --listen 0 --to "$BPORT" >"$DIR/relay-$1" 2>&1 &
	_p=$!
	RELAY_PIDS="$RELAY_PIDS $_p"
	_n=0
	while ! grep -q '^port ' "$DIR/relay-$1" && kill -0 "$_p" 2>/dev/null && [ $_n -lt 50 ]; do
		sleep 0.1
		_n=$((_n + 1))
	done
	_port=$(awk '/^port / { print $2 }' "$DIR/relay-$1")
	if [ -n "$_port" ] && kill -0 "$_p" 2>/dev/null; then
		RELAY_URL=http://127.0.0.1:$_port/v1/bench
	else
		echo "gateway-bench: no $1 relay: $(cat "$DIR/relay-$1")" >&2
		RELAY_URL=-
	fi
}
if [ "$MODE" != nginx ]; then
	start_relay epoll
	RELAY_EPOLL=$RELAY_URL
	start_relay uring
	RELAY_URING=$RELAY_URL
	start_relay batch
	RELAY_BATCH=$RELAY_URL
fi

# Pins vramd (all its threads) and the backend to the cores in $1, wrk to $2
# ("" = anywhere).
place() {
	if command -v taskset >/dev/null; then
		taskset -a -pc "$1" "$PID" >/dev/null
		[ -n "$BACKEND_PID" ] && taskset -a -pc "$1" "$BACKEND_PID" >/dev/null
		for p in $RELAY_PIDS ${NGINX_PIDS:-}; do taskset -a -pc "$1" "$p" >/dev/null 2>&1 || true; done
	fi
	PIN_W=${2:+taskset -c $2}
}

measure() { # placement
	L=$1
	$PIN_W wrk -t1 -c"$CONNS" -d1s "$GATEWAY" >/dev/null # warm-up
	set -- $(run_wrk "$DIRECT" 1);         D1_RPS=$1; D1_P50=$2
	set -- $(run_wrk "$GATEWAY" 1);        G1_RPS=$1; G1_P50=$2
	set -- $(run_wrk "$DIRECT" "$CONNS");  DN_RPS=$1; DN_P50=$2
	set -- $(run_wrk "$GATEWAY" "$CONNS"); GN_RPS=$1; GN_P50=$2
	printf 'gateway-bench: %-8s %-10s %-8s %12s %10s\n' placement path conns requests/s p50
	printf 'gateway-bench: %-8s %-10s %-8s %12s %8sus\n' "$L" direct 1 "$D1_RPS" "$D1_P50"
	printf 'gateway-bench: %-8s %-10s %-8s %12s %8sus\n' "$L" gateway 1 "$G1_RPS" "$G1_P50"
	printf 'gateway-bench: %-8s %-10s %-8s %12s %8sus\n' "$L" direct "$CONNS" "$DN_RPS" "$DN_P50"
	printf 'gateway-bench: %-8s %-10s %-8s %12s %8sus\n' "$L" gateway "$CONNS" "$GN_RPS" "$GN_P50"
	RE_RPS=0 RU_RPS=0 RB_RPS=0
	[ "$RELAY_EPOLL" = - ] || { set -- $(run_wrk "$RELAY_EPOLL" "$CONNS"); RE_RPS=$1; }
	[ "$RELAY_URING" = - ] || { set -- $(run_wrk "$RELAY_URING" "$CONNS"); RU_RPS=$1; }
	[ "$RELAY_BATCH" = - ] || { set -- $(run_wrk "$RELAY_BATCH" "$CONNS"); RB_RPS=$1; }
	printf 'gateway-bench: %-8s %-10s %-8s %12s\n' "$L" relay-epoll "$CONNS" "$RE_RPS"
	printf 'gateway-bench: %-8s %-10s %-8s %12s\n' "$L" relay-batch "$CONNS" "$RB_RPS"
	printf 'gateway-bench: %-8s %-10s %-8s %12s\n' "$L" relay-uring "$CONNS" "$RU_RPS"
	NG_RPS=0
	[ "$NGINX_URL" = - ] || { set -- $(run_wrk "$NGINX_URL" "$CONNS"); NG_RPS=$1; }
	printf 'gateway-bench: %-8s %-10s %-8s %12s\n' "$L" nginx "$CONNS" "$NG_RPS"
	awk -v d="$D1_P50" -v g="$G1_P50" -v dr="$DN_RPS" -v gr="$GN_RPS" -v l="$L" -v c="$CONNS" 'BEGIN {
		printf "gateway-bench: %s: added latency p50 %.1f us (target <= 50 us); throughput %.0f %% of direct with %s connections (target >= 80 %%)\n", l, g - d, 100 * gr / dr, c
	}' | tee -a "$DIR/ratios"
	awk -v dr="$DN_RPS" -v gr="$GN_RPS" -v re="$RE_RPS" -v rb="$RB_RPS" -v ru="$RU_RPS" -v l="$L" 'BEGIN {
		printf "gateway-bench: %s floor: epoll relay %.0f %% of direct, batch relay %.0f %% of direct, io_uring relay %.0f %% of direct, gateway %.0f %% of the epoll relay\n", l, 100 * re / dr, 100 * rb / dr, 100 * ru / dr, (re > 0 ? 100 * gr / re : 0)
	}' | tee -a "$DIR/ratios"
	[ "$NGINX_URL" = - ] || awk -v dr="$DN_RPS" -v gr="$GN_RPS" -v nr="$NG_RPS" -v l="$L" 'BEGIN {
		printf "gateway-bench: %s nginx: gateway %.3f x nginx; nginx %.0f %% of direct\n", l, gr / nr, 100 * nr / dr
	}' | tee -a "$DIR/ratios"
}

median() { # "placement:" or "placement floor:", field -> median of that field over the rounds
	grep "gateway-bench: $1" "$DIR/ratios" | awk -v f="$2" '{ print $f }' | sort -n |
		awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The median, min and max of the values (one a line) on stdin: "m (lo-hi)".
stats() {
	sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.3f (%.3f-%.3f)", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR] }'
}

if [ "$MODE" = nginx ]; then
	# Every gateway run sits between two nginx runs and is divided by their
	# mean, so that a change of the machine's load during the run (other
	# processes, frequency) moves both sides of its ratio. Which gateway
	# comes first alternates from round to round.
	ROUNDS=${ROUNDS:-5}
	echo "gateway-bench: gateway against nginx, fixed ~30-byte JSON reply, wrk -t1 -c$CONNS -d${DURATION}s, $NCPU cores, nothing pinned, $ROUNDS rounds"
	[ -z "$BASE" ] || echo "gateway-bench: gateway: $VRAMD; base: $BASE_VRAMD"
	for u in "$GATEWAY" "$NGINX_URL" "$BASE_URL"; do
		[ "$u" = - ] || wrk -t1 -c"$CONNS" -d1s "$u" >/dev/null # warm-up
	done
	# What other processes took of the CPUs during a run, in cores: the
	# machine's busy time less that of the daemons, nginx, the backend, this
	# script and its children (wrk). A busy neighbour shows here. And the CPU
	# time per request of the proxy measured, which a neighbour disturbs far
	# less than its throughput.
	OUR_PIDS="$PID $BASE_PID ${NGINX_PIDS:-} $BACKEND_PID"
	ticks_of() { # pids -> their user + system clock ticks
		for p in "$@"; do sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null; done |
			awk '{ s += $12 + $13 } END { print s + 0 }'
	}
	cpu_ticks() { # proxy pids -> "busy ours self proxy" in clock ticks, now
		awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
		ticks_of $OUR_PIDS
		sed 's/^.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }'
		ticks_of "$@"
	}
	TICK=$(getconf CLK_TCK)
	run_one() { # who (nginx, gateway, base): "who requests/s other_cores proxy_us_per_request" in $DIR/runs
		case $1 in
		nginx) _u=$NGINX_URL _p=$NGINX_PIDS ;;
		gateway) _u=$GATEWAY _p=$PID ;;
		base) _u=$BASE_URL _p=$BASE_PID ;;
		esac
		_before=$(cpu_ticks $_p | tr '\n' ' ')
		_t0=$(date +%s.%N)
		set -- "$1" $(run_wrk "$_u" "$CONNS")
		_t1=$(date +%s.%N)
		echo "$1 $2 $_before $(cpu_ticks $_p | tr '\n' ' ')" | awk -v t="$TICK" -v t0="$_t0" -v t1="$_t1" -v d="$DURATION" '{
			printf "%s %s %.2f %.2f\n", $1, $2, (($7 - $3) - ($8 - $4) - ($9 - $5)) / t / (t1 - t0),
				($10 - $6) / t * 1e6 / ($2 * d)
		}' >>"$DIR/runs"
	}
	: >"$DIR/runs"
	i=0
	while [ "$i" -lt "$ROUNDS" ]; do
		order=gateway
		[ "$BASE_URL" = - ] || { [ $((i % 2)) -eq 0 ] && order="gateway base" || order="base gateway"; }
		for who in $order; do
			run_one nginx
			run_one "$who"
		done
		i=$((i + 1))
		echo "gateway-bench: round $i: $(tail -n "$((2 * $(echo "$order" | wc -w)))" "$DIR/runs" |
			awk '{ printf "%s%s %.0f/s %.1fus", (NR > 1 ? ", " : ""), $1, $2, $4; if ($3 > m) m = $3 } END { printf "; other processes up to %.2f cores", m }')"
	done
	run_one nginx
	# Each gateway run against the mean of the nginx runs around it, with the
	# most other processes took during the three.
	awk '{ who[NR] = $1; rps[NR] = $2; other[NR] = $3 }
	     END { for (k = 2; k < NR; k++) if (who[k] != "nginx") {
		m = other[k - 1]; if (other[k] > m) m = other[k]; if (other[k + 1] > m) m = other[k + 1]
		printf "%s %.4f %.2f\n", who[k], 2 * rps[k] / (rps[k - 1] + rps[k + 1]), m } }' \
		"$DIR/runs" >"$DIR/ratios"
	# QUIET: the rounds in which other processes took at most this many cores
	QUIET=${QUIET:-0.1}
	summary() { # label, filter on the ratio lines ($1: who, $2: ratio, $3: other cores)
		echo "gateway-bench: $1, median (range) of $(awk "$2 { n++ } END { print n + 0 }" "$DIR/ratios") rounds: $(awk "$2 { print \$2 }" "$DIR/ratios" | stats)"
	}
	for who in gateway base; do
		grep -q "^$who " "$DIR/ratios" || continue
		summary "$who / nginx" "\$1 == \"$who\""
		summary "$who / nginx, rounds with other processes <= $QUIET cores" "\$1 == \"$who\" && \$3 <= $QUIET"
	done
	for who in nginx gateway base; do
		grep -q "^$who " "$DIR/runs" || continue
		echo "gateway-bench: $who CPU us per request, median (range) of $(grep -c "^$who " "$DIR/runs") runs: $(awk -v w="$who" '$1 == w { print $4 }' "$DIR/runs" | stats)"
	done
	exit 0
fi

echo "gateway-bench: fixed ~30-byte JSON reply, wrk -t1 -d${DURATION}s, $NCPU cores"
ROUNDS=${ROUNDS:-1}
i=0
while [ "$i" -lt "$ROUNDS" ]; do
	place "0-$((NCPU - 1))" ""
	measure shared
	if [ "$NCPU" -ge 2 ]; then
		place "0-$((NCPU - 2))" "$((NCPU - 1))"
		measure split
	fi
	i=$((i + 1))
done
if [ "$ROUNDS" -gt 1 ]; then
	for l in shared split; do
		grep -q "gateway-bench: $l:" "$DIR/ratios" || continue
		echo "gateway-bench: $l, median of $ROUNDS rounds: added latency p50 $(median "$l:" 6) us; throughput $(median "$l:" 13) % of direct"
		echo "gateway-bench: $l, median of $ROUNDS rounds: epoll relay $(median "$l floor:" 6) % of direct, batch relay $(median "$l floor:" 12) %, io_uring relay $(median "$l floor:" 18) %, gateway $(median "$l floor:" 23) % of the epoll relay"
		grep -q "gateway-bench: $l nginx:" "$DIR/ratios" &&
			echo "gateway-bench: $l, median of $ROUNDS rounds: gateway $(median "$l nginx:" 5) x nginx; nginx $(median "$l nginx:" 9) % of direct"
	done
fi
