#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof and benchmark of the host-memory budget and the disk tier (issue
# "host memory is a managed tier ... a disk tier"), run on a GPU host from
# the repository root with build/ built on the build host and the Debian
# runtime libraries in .rt/:
#   sh tests/gpu/run-park.sh [PARK_DIR]
# PARK_DIR (default /var/tmp/vramd-park) must be on the disk to measure, not
# tmpfs. Everything it prints is also under $OUT (or a temporary dir).
#  A. the disk's own O_DIRECT write and read rates (dd, 4 GiB);
#  B. an 8B-shaped transformers server (tf_server.py, random weights loaded
#     from safetensors, 16 GB in bf16), offload: hook: the time of a greedy
#     16-token request warm, right after a restore from host RAM (offloaded),
#     right after a restore from its park file (parked), and from a cold
#     start; park and restore times; the tokens identical in every case;
#  C. three 4B-shaped servers taking turns on a GPU that holds one (each
#     declares 60 GiB), with host.limit so that one parked copy fits in RAM:
#     the host memory held, sampled every 0.1 s, never above the budget.
set -u
PARK=${1:-/var/tmp/vramd-park}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vpk.XXXXXX)}
S=$(mktemp -d /tmp/vps.XXXXXX) # short: sockets live under it
CACHE=${CACHE:-/var/tmp/vramd-weights}
PORT=${PORT:-18680}
U="http://127.0.0.1:$PORT"
C="build/src/ctl/bin/vramctl --url $S/state/vramd.sock"
VPID=
cleanup() {
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	rm -rf "$S" "$PARK"
}
trap cleanup EXIT
FAILS=0
row() { printf '%-46s %s\n' "$1" "$2" | tee -a "$W/summary.txt"; }
check() { # name condition-result(0/1) detail
	if [ "$2" = 0 ]; then row "$1" "ok: $3"; else row "$1" "FAILED: $3"; FAILS=$((FAILS + 1)); fi
}
: >"$W/summary.txt"
mkdir -p "$PARK" "$CACHE"
row "park directory" "$PARK on $(df -T "$PARK" | awk 'NR==2 { print $2, $1 }')"

echo "== A. the disk"
dd if=/dev/zero of="$PARK/dd.test" bs=64M count=64 oflag=direct 2>"$W/dd-write.txt"
row "  dd write, O_DIRECT, 4 GiB" "$(tail -1 "$W/dd-write.txt")"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
dd if="$PARK/dd.test" of=/dev/null bs=64M iflag=direct 2>"$W/dd-read.txt"
row "  dd read, O_DIRECT, 4 GiB" "$(tail -1 "$W/dd-read.txt")"
rm -f "$PARK/dd.test"

echo "== weights (once)"
echo "$PARTS" | grep -q B || touch "$W/no-8b"
[ -e "$W/no-8b" ] || python3 tests/gpu/tf_server.py --size 8b --cache "$CACHE" --prepare >"$W/prepare-8b.txt" 2>&1 &&
	python3 tests/gpu/tf_server.py --size 4b --cache "$CACHE" --prepare >"$W/prepare-4b.txt" 2>&1 ||
	{ echo "weights could not be written" >&2; cat "$W"/prepare-*.txt >&2; exit 1; }

start_vramd() { # config log
	"$VRAMD" --config "$1" --state-dir "$S/state" >"$2" 2>&1 &
	VPID=$!
	for _ in $(seq 1 100); do curl -sf "$U/healthz" >/dev/null && return 0; sleep 0.1; done
	return 1
}
stop_vramd() { kill -TERM "$VPID"; wait "$VPID" 2>/dev/null; VPID=; }
gen() { # workload -> "seconds tokens" (time of the whole request through the gateway)
	curl -s -o "$W/gen.json" -w '%{time_total}' -H 'Content-Type: application/json' \
		-d '{"prompt": [128000, 791, 6864, 315, 9822, 374], "max_new_tokens": 16}' "$U/w/$1/generate" >"$W/gen.time"
	echo "$(cat "$W/gen.time") $(python3 -c "import json; print(json.load(open('$W/gen.json'))['tokens'])" 2>/dev/null | tr -d ' ')"
}
field() { curl -sf "$U/api/workloads/$1" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"; }

PARTS=${PARTS:-BC} # which of B and C run (A always)
if echo "$PARTS" | grep -q B; then
echo "== B. one 8B model: warm, offloaded, parked, cold"
cat >"$W/b.yaml" <<EOF
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
host: { limit: 100GiB, park_dir: $PARK }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  big:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, 8b, --cache, $CACHE]
    gpus: [0]
    memory: 40GiB
    health: { path: /health, start_timeout: 300s }
    offload: hook
EOF
start_vramd "$W/b.yaml" "$W/vramd-b.log" || { echo "vramd did not come up" >&2; cat "$W/vramd-b.log" >&2; exit 1; }
T0=$(date +%s.%N)
$C start big >/dev/null || { echo "big did not start" >&2; tail -20 "$S/state/logs/big.log" >&2; exit 1; }
T1=$(date +%s.%N)
row "  cold start (weights in page cache)" "$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f s", b - a }')"
gen big >/dev/null # first request after the server's own warm-up
set -- $(gen big); WARM=$1; REF=$2
row "  warm request (16 tokens)" "$WARM s"
row "  GPU MiB of big" "$(used "$(field big "['pid']")")"
OFF=$($C offload big 2>&1); check "  offload" $? "$(echo "$OFF" | tail -1)"
set -- $(gen big); check "  request on offloaded: same tokens" $([ "$2" = "$REF" ]; echo $?) "$1 s"
row "  restore from RAM (engine)" "$(field big "['engine']['last_seconds']") s"
$C offload big >/dev/null
P0=$(date +%s.%N); PK=$($C park big 2>&1); PRC=$?; P1=$(date +%s.%N)
check "  park" $PRC "$(echo "$PK" | tail -1) ($(awk -v a="$P0" -v b="$P1" 'BEGIN { printf "%.2f", b - a }') s)"
ls -l "$PARK" >"$W/park-files.txt"
row "  host status while parked" "$(curl -sf "$U/api/status" | python3 -c "import json,sys; h=json.load(sys.stdin)['host']; print({k: h[k] for k in ('parked', 'kept', 'on_disk', 'budget')})")"
row "  RSS of big while parked (kB)" "$(awk '/VmRSS/ { print $2 }' /proc/"$(field big "['pid']")"/status)"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
set -- $(gen big); PARKED=$1
check "  request on parked: same tokens" $([ "$2" = "$REF" ]; echo $?) "$PARKED s"
row "  restore from disk (engine)" "$(field big "['engine']['last_seconds']") s"
$C stop big >/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
set -- $(gen big); check "  request on stopped (cold, page cache dropped): same tokens" $([ "$2" = "$REF" ]; echo $?) "$1 s"
stop_vramd
fi

if echo "$PARTS" | grep -q C; then
echo "== C. three 4B models take turns; one parked copy fits in RAM"
cat >"$W/c.yaml" <<EOF
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
host: { limit: 10GiB, park_dir: $PARK }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
EOF
for n in m1 m2 m3; do
	cat >>"$W/c.yaml" <<EOF
  $n:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, 4b, --cache, $CACHE]
    gpus: [0]
    memory: 60GiB
    health: { path: /health, start_timeout: 300s }
    offload: hook
EOF
done
start_vramd "$W/c.yaml" "$W/vramd-c.log" || { echo "vramd did not come up" >&2; exit 1; }
( while :; do curl -sf "$U/api/status" | python3 -c "import json,sys; h=json.load(sys.stdin)['host']; print(h['parked'] + h['kept'], h['budget'])" 2>/dev/null; sleep 0.1; done ) >"$W/host-samples.txt" &
SAMPLER=$!
OK=0
for n in m1 m2 m3 m1 m2 m3 m1; do
	set -- $(gen $n)
	[ -n "${2:-}" ] || OK=1
	row "  request $n" "$1 s; states $(for x in m1 m2 m3; do printf '%s=%s ' $x "$(field $x "['state']")"; done)"
done
kill $SAMPLER 2>/dev/null
MAX=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$W/host-samples.txt")
BUDGET=$(awk 'NR == 1 { print $2 }' "$W/host-samples.txt")
check "  every request answered" $OK ""
check "  host memory held never above the budget" $([ "$MAX" -le "$BUDGET" ]; echo $?) "max $MAX of $BUDGET bytes over $(grep -c . "$W/host-samples.txt") readings"
grep -h "host memory:" "$W/vramd-c.log" | head -20 >"$W/host-steps.txt"
row "  steps taken" "$(grep -c . "$W/host-steps.txt") (host-steps.txt)"
stop_vramd
fi

echo
echo "== summary"
cat "$W/summary.txt"
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
