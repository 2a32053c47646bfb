# SPDX-License-Identifier: MIT
# Sourced by the bench scripts: starts vramd on a free loopback port with the
# simulated GPUs given and waits until it answers; writes the config of the
# gateway benchmarks; stops what they started.
#   bench_start_vramd TAG GPUS [NAME]
# Needs VRAMD, DIR (holding bench.yaml) and PIN_D (a taskset prefix or empty);
# sets PORT, URL and PID. NAME (default bench) picks the config
# $DIR/NAME.yaml, the state directory $DIR/NAME-state and the log
# $DIR/NAME.log, so that a second vramd can run beside the first. On
# failure prints vramd's log and exits 1.
bench_start_vramd() {
	_name=${3:-bench}
	if [ "$_name" = bench ]; then
		_state=$DIR/state _log=$DIR/vramd.log
	else
		_state=$DIR/$_name-state _log=$DIR/$_name.log
	fi
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	URL=http://127.0.0.1:$PORT
	$PIN_D "$VRAMD" --config "$DIR/$_name.yaml" --listen "127.0.0.1:$PORT" --gpus "$2" \
		--state-dir "$_state" 2>"$_log" &
	PID=$!
	bench_wait "$1: vramd" "$URL/healthz" "$PID" "$_log"
}

# Waits up to BENCH_WAIT_S (default 10) s for URL to answer 2xx while PID
# runs; else prints WHAT "did not come up" and LOG, and exits 1.
#   bench_wait WHAT URL PID LOG
bench_wait() {
	_n=0
	until curl -sf "$2" >/dev/null 2>&1; do
		_n=$((_n + 1))
		if [ $_n -gt $((${BENCH_WAIT_S:-10} * 10)) ] || ! kill -0 "$3" 2>/dev/null; then
			echo "$1 did not come up:" >&2
			cat "$4" >&2
			exit 1
		fi
		sleep 0.1
	done
}

# Stops PID (TERM) and waits for it; nothing when it is empty or gone.
#   bench_stop PID
bench_stop() {
	if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
		kill -TERM "$1"
		wait "$1" 2>/dev/null || true
	fi
}

# The config of the gateway benchmarks: one workload, bench, run as CMD (a
# YAML list), with the rest of its lines (each indented by four spaces).
#   bench_write_config FILE CMD REST
bench_write_config() {
	cat >"$1" <<EOC
daemon:
  log_level: warn
gpus:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 1s
workloads:
  bench:
    cmd: $2
    gpus: 1
    memory: 1GiB
    models: [bench-model]
$3
EOC
}
