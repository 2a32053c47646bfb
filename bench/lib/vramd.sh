# SPDX-License-Identifier: MIT
# Sourced by the bench scripts: starts vramd on a free loopback port with the
# simulated GPUs given and waits until it answers.
#   bench_start_vramd TAG GPUS
# Needs VRAMD, DIR (holding bench.yaml) and PIN_D (a taskset prefix or empty);
# sets PORT, URL and PID. On failure prints vramd's log and exits 1.
bench_start_vramd() {
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	URL=http://127.0.0.1:$PORT
	$PIN_D "$VRAMD" --config "$DIR/bench.yaml" --listen "127.0.0.1:$PORT" --gpus "$2" \
		--state-dir "$DIR/state" 2>"$DIR/vramd.log" &
	PID=$!
	_n=0
	until curl -sf "$URL/healthz" >/dev/null 2>&1; do
		_n=$((_n + 1))
		if [ $_n -gt 100 ] || ! kill -0 "$PID" 2>/dev/null; then
			echo "$1: vramd did not come up:" >&2
			cat "$DIR/vramd.log" >&2
			exit 1
		fi
		sleep 0.1
	done
}
