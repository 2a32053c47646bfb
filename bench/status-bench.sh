#!/bin/sh
# SPDX-License-Identifier: MIT
# GET /api/status under load: vramd with 64 workloads on 8 simulated GPUs,
# measured with wrk; then vramd's resident memory.
#
#   bench/status-bench.sh [BUILD_DIR] [DURATION_S] [CONNECTIONS]
#
# Targets (issue: REST API): >= 20,000 requests/s with p99 <= 2 ms on a
# 2-core machine; RSS <= 16 MiB with 64 workloads. On a machine with two or
# more cores vramd runs on core 0 and wrk on core 1, so that the two do not
# compete. The 64 workloads are `sleep` processes (no health check, 1 GiB
# each, 8 per GPU), all started before the measurement, so that the status
# carries 64 pids and 64 GPU processes. BENCH_LAZY=1 leaves them stopped.
set -eu
. "$(dirname "$0")/lib/vramd.sh"

BUILD=${1:-build}
DURATION=${2:-10}
CONNS=${3:-32}
VRAMD=$BUILD/src/daemon/bin/vramd
WORKLOADS=64

command -v wrk >/dev/null || { echo "status-bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$VRAMD" ] || { echo "status-bench: $VRAMD is not built" >&2; exit 1; }

DIR=$(mktemp -d /tmp/vramd-bench-XXXXXX)
PID=
cleanup() {
	bench_stop "$PID"
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

{
	echo "daemon:"
	echo "  log_level: warn"
	echo "gpus:"
	echo "  reserve: 0"
	echo "defaults:"
	echo "  idle: { offload_after: never, release_after: never }"
	echo "  health: none"
	echo "  stop_grace: 1s"
	echo "workloads:"
	i=0
	while [ $i -lt $WORKLOADS ]; do
		echo "  w$i:"
		echo "    cmd: [sleep, \"100000\"]"
		echo "    gpus: [$((i % 8))]"
		echo "    memory: 1GiB"
		i=$((i + 1))
	done
} >"$DIR/bench.yaml"

NCPU=$(nproc)
PIN_D=
PIN_W=
if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
	PIN_D="taskset -c 0"
	PIN_W="taskset -c 1"
fi

bench_start_vramd status-bench 8x80GiB

if [ "${BENCH_LAZY:-0}" != 1 ]; then
	i=0
	while [ $i -lt $WORKLOADS ]; do
		curl -sf -X POST "$URL/api/workloads/w$i/start?wait=0" >/dev/null
		i=$((i + 1))
	done
	n=0
	while [ "$(curl -sf "$URL/api/status" | grep -o '"state":"ready"' | wc -l)" -lt $WORKLOADS ]; do
		n=$((n + 1))
		[ $n -le 100 ] || { echo "status-bench: workloads did not all start" >&2; exit 1; }
		sleep 0.1
	done
fi
READY=$(curl -sf "$URL/api/status" | grep -o '"state":"ready"' | wc -l)
BYTES=$(curl -sf "$URL/api/status" | wc -c)

# Warm up, then measure.
$PIN_W wrk -t1 -c"$CONNS" -d2s "$URL/api/status" >/dev/null
OUT=$($PIN_W wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$URL/api/status")
RSS_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status")
HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$PID/status")

RPS=$(echo "$OUT" | awk '/^Requests\/sec:/ { print $2 }')
P50=$(echo "$OUT" | awk '$1 == "50%" { print $2 }')
P99=$(echo "$OUT" | awk '$1 == "99%" { print $2 }')
ERRS=$(echo "$OUT" | awk '/Non-2xx|Socket errors/ { print }')

echo "status-bench: GET /api/status, $WORKLOADS workloads ($READY running) on 8 simulated GPUs, $BYTES-byte reply"
echo "status-bench: wrk -t1 -c$CONNS -d${DURATION}s, $NCPU cores${PIN_D:+, vramd on core 0, wrk on core 1}"
echo "status-bench: requests/s $RPS   p50 $P50   p99 $P99   (target >= 20000/s, p99 <= 2ms)"
echo "status-bench: vramd RSS $((RSS_KB / 1024)).$(((RSS_KB % 1024) * 10 / 1024)) MiB, peak $((HWM_KB / 1024)).$(((HWM_KB % 1024) * 10 / 1024)) MiB   (target <= 16 MiB)"
[ -z "$ERRS" ] || echo "status-bench: wrk reported: $ERRS"
