#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof that vramd takes its workloads back after its own death and
# upgrades in place without stopping them (issue "vramd survives its own
# death"), run on a GPU host from the repository root with build/ built on
# the build host and the Debian runtime libraries in .rt/:
#   sh tests/gpu/run-adopt.sh [GIB]
# Two hooked torch workloads (gpu_holder.py): "parked" holds GIB GiB of random
# data with a checksum per chunk and is offloaded; "serving" holds 4 GiB and
# answers requests through the gateway (load_client.py, 8 connections).
#  1. vramd is killed with SIGKILL under that load and started again: the
#     time from its start to the gateway serving again; both workloads are
#     taken back (same pids, "adopted"), and nvidia-smi lists no second process;
#  2. a request through the gateway to "parked" restores it: its speed, and
#     the checksums of all its data;
#  3. "serving" never stopped: its own port answered all along;
#  4. an upgrade in place (vramctl daemon restart) under load: the requests
#     that failed (0 expected), and both workloads keep their pids.
# Prints a summary; everything it wrote is under $OUT (or a temporary dir).
set -u
GIB=${1:-20}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vad.XXXXXX)}
S=$(mktemp -d /tmp/vas.XXXXXX) # short: sockets live under it
PORT=${PORT:-18670}
cat >"$W/adopt.yaml" <<EOF
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  parked:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, "\${PORT}", --gib, "$GIB"]
    gpus: [0]
    memory: $((GIB + 4))GiB
    health: { path: /health, start_timeout: 240s }
    offload: hook
    env: { VRAM_HOOK_LOG: $W/hook-parked.log }
  serving:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, "\${PORT}", --gib, "4"]
    gpus: [0]
    memory: 8GiB
    health: { path: /health, start_timeout: 240s }
    offload: hook
    env: { VRAM_HOOK_LOG: $W/hook-serving.log }
EOF
C="build/src/ctl/bin/vramctl --url http://127.0.0.1:$PORT"
U="http://127.0.0.1:$PORT"
VPID=
cleanup() {
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	for p in $PIDS; do kill -KILL -- "-$p" 2>/dev/null; done
	rm -rf "$S"
}
PIDS=
trap cleanup EXIT
start_vramd() { # log file
	"$VRAMD" --config "$W/adopt.yaml" --state-dir "$S/state" >"$1" 2>&1 &
	VPID=$!
}
wait_up() { for _ in $(seq 1 100); do curl -sf "$U/healthz" >/dev/null && return 0; sleep 0.1; done; return 1; }
field() { # workload key
	curl -sf "$U/api/workloads/$1" | python3 -c "import json,sys; print(json.load(sys.stdin)$2)"
}
FAILS=0
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$W/summary.txt"; }
check() { # name condition-result(0/1) detail
	if [ "$2" = 0 ]; then row "$1" "ok: $3"; else row "$1" "FAILED: $3"; FAILS=$((FAILS + 1)); fi
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
: >"$W/summary.txt"

start_vramd "$W/vramd-1.log"
wait_up || { echo "vramd did not come up" >&2; cat "$W/vramd-1.log" >&2; exit 1; }
$C start parked && $C start serving || { echo "a workload did not start" >&2; exit 1; }
P1=$(field parked "['pid']"); P2=$(field serving "['pid']"); PIDS="$P1 $P2"
SPORT=$(field serving "['port']")
BASE=$(curl -s "http://127.0.0.1:$(field parked "['port']")/check")
echo "parked check before: $BASE"
OFF=$($C offload parked 2>&1)
check "offload parked ($GIB GiB of data)" $? "$OFF"
row "  parked GPU MiB while offloaded" "$(used "$P1")"
sleep 1.5 # the state file is written on the next loop turn, within 0.5 s

echo "== SIGKILL under load"
python3 tests/gpu/load_client.py "$U/w/serving/health" 8 8 >"$W/load-kill.json" &
LOAD=$!
python3 tests/gpu/load_client.py "http://127.0.0.1:$SPORT/health" 8 2 >"$W/load-direct.json" &
DIRECT=$!
sleep 2
kill -KILL "$VPID"; wait "$VPID" 2>/dev/null; VPID=
T0=$(date +%s.%N)
start_vramd "$W/vramd-2.log"
until curl -sf -o /dev/null "$U/w/serving/health"; do
	sleep 0.01
	[ "$(secs "$T0" "$(date +%s.%N)" | cut -d. -f1)" -ge 30 ] && break
done
T1=$(date +%s.%N)
check "gateway serving again after the new start" $(curl -sf -o /dev/null "$U/w/serving/health"; echo $?) "$(secs "$T0" "$T1") s"
wait $LOAD $DIRECT
row "  gateway load across the kill" "$(cat "$W/load-kill.json")"
check "serving's own port answered all along" $(python3 -c "import json; d=json.load(open('$W/load-direct.json')); exit(d['errors'] + d['non_2xx'] != 0 or d['ok'] == 0)"; echo $?) "$(cat "$W/load-direct.json")"
for n in parked serving; do
	A=$(field $n "['adopted']"); P=$(field $n "['pid']"); ST=$(field $n "['state']")
	row "  $n after the restart" "state $ST, pid $P, adopted $A"
done
check "parked taken back, offloaded" $([ "$(field parked "['state']")" = offloaded ] && [ "$(field parked "['pid']")" = "$P1" ]; echo $?) "pid $P1"
check "serving taken back, ready" $([ "$(field serving "['state']")" = ready ] && [ "$(field serving "['pid']")" = "$P2" ]; echo $?) "pid $P2"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader >"$W/apps.txt"
N=$(grep -c . "$W/apps.txt")
check "nvidia-smi: no second process" $([ "$N" -eq 2 ]; echo $?) "$(tr '\n' ';' <"$W/apps.txt")"

echo "== restore through the gateway"
T0=$(date +%s.%N)
AFTER=$(curl -s "$U/w/parked/check")
T1=$(date +%s.%N)
echo "parked check after: $AFTER"
echo "$AFTER" | grep -q '"ok": *true'
check "parked contents after restore" $? "$(echo "$AFTER" | head -c 100)"
RS=$(field parked "['engine']['last_seconds']")
row "  restore time (engine), request time" "$RS s, $(secs "$T0" "$T1") s for $GIB GiB: $(awk -v g="$GIB" -v s="$RS" 'BEGIN { if (s > 0) printf "%.1f GB/s", g * 1.073741824 / s }')"

echo "== upgrade in place under load"
VP=$VPID
python3 tests/gpu/load_client.py "$U/w/serving/health" 8 8 >"$W/load-upgrade.json" &
LOAD=$!
sleep 3
T0=$(date +%s.%N)
# over the control socket: a restart is for vramd's own user or root (or the token)
UP=$(build/src/ctl/bin/vramctl --url "$S/state/vramd.sock" daemon restart 2>&1)
URC=$?
T1=$(date +%s.%N)
check "vramctl daemon restart" $URC "$(echo "$UP" | tail -1) in $(secs "$T0" "$T1") s"
grep -q "restarted in place" "$W/vramd-2.log"
check "the log says it restarted in place" $? "$(grep -m1 'restarted in place' "$W/vramd-2.log")"
wait $LOAD
check "requests failed during the upgrade" $(python3 -c "import json; d=json.load(open('$W/load-upgrade.json')); exit(d['errors'] + d['non_2xx'] != 0)"; echo $?) "$(cat "$W/load-upgrade.json")"
check "vramd kept its pid (executed in place)" $(kill -0 "$VP" 2>/dev/null && curl -sf "$U/healthz" >/dev/null; echo $?) "pid $VP"
check "workloads kept their pids" $([ "$(field parked "['pid']")" = "$P1" ] && [ "$(field serving "['pid']")" = "$P2" ]; echo $?) "$P1 $P2"
AFTER=$(curl -s "$U/w/parked/check")
echo "$AFTER" | grep -q '"ok": *true'
check "parked contents after the upgrade" $? "$(echo "$AFTER" | head -c 100)"

echo
echo "== summary"
cat "$W/summary.txt"
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
