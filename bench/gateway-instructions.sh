#!/bin/sh
# SPDX-License-Identifier: MIT
# Instructions vramd spends on one proxied request, counted by callgrind:
# vramd runs under valgrind --tool=callgrind, REQUESTS requests go one after
# another over one kept-alive connection through /w/bench/ to
# bench-http-backend, and the instructions vramd executed for them
# (counters zeroed after a warm-up) are divided by their number. Unlike
# requests/s on a shared two-core machine, the count comes out the same
# from run to run to within a few instructions, so it shows what a change
# to the gateway's code costs per request.
#
#   bench/gateway-instructions.sh [BUILD_DIR] [REQUESTS] [OTHER_BUILD_DIR]
#
# With OTHER_BUILD_DIR the same is counted for that build's vramd (in front
# of this build's backend), and the ratio of the two is printed.
set -eu
. "$(dirname "$0")/lib/vramd.sh"

BUILD=${1:-build}
REQUESTS=${2:-3000}
OTHER=${3:-}
BACKEND=$BUILD/bench/bench-http-backend

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
	{ echo "gateway-instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BACKEND" ] || { echo "gateway-instructions: $BACKEND is not built" >&2; exit 1; }
BACKEND=$(cd "$(dirname "$BACKEND")" && pwd)/$(basename "$BACKEND")

DIR=$(mktemp -d /tmp/vramd-gwinsn-XXXXXX)
PID=
cleanup() {
	bench_stop "$PID"
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

bench_write_config "$DIR/bench.yaml" "[$BACKEND, --port, \"\${PORT}\"]" "    health: { tcp: true }"
cat >"$DIR/client.py" <<'EOC'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", "/w/bench/v1/bench")
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"gateway-instructions: {r.status} {body!r}")
EOC

count() { # build dir -> instructions per request
	VRAMD=$1/src/daemon/bin/vramd
	[ -x "$VRAMD" ] || { echo "gateway-instructions: $VRAMD is not built" >&2; exit 1; }
	PIN_D="valgrind --tool=callgrind --callgrind-out-file=$DIR/callgrind.out"
	BENCH_WAIT_S=120 bench_start_vramd gateway-instructions 1x80GiB
	python3 "$DIR/client.py" "$PORT" 200 # starts the backend; buffers and pools settle
	callgrind_control -z "$PID" >/dev/null 2>&1
	python3 "$DIR/client.py" "$PORT" "$REQUESTS"
	callgrind_control -d "$PID" >/dev/null 2>&1
	bench_stop "$PID"
	PID=
	# the dump after the zeroing: the file with the highest part number
	f=$(ls "$DIR"/callgrind.out.* | sort -t. -k3 -n | tail -n 1)
	awk -v n="$REQUESTS" '/^(summary|totals):/ { printf "%.0f\n", $2 / n; exit }' "$f"
	rm -f "$DIR"/callgrind.out*
}

echo "gateway-instructions: GET /w/bench/v1/bench, $REQUESTS requests one after another on one connection"
THIS=$(count "$BUILD")
echo "gateway-instructions: $BUILD: $THIS instructions per request"
if [ -n "$OTHER" ]; then
	THAT=$(count "$OTHER")
	echo "gateway-instructions: $OTHER: $THAT instructions per request"
	awk -v a="$THIS" -v b="$THAT" 'BEGIN { printf "gateway-instructions: %.4f x the other build (%+d per request)\n", a / b, a - b }'
fi
