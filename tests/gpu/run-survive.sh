#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof that a hooked PyTorch workload outlives vramd (issue: libvram.so,
# "vramd gone"), run on a GPU host from the repository root with build/ built
# on the build host and the Debian runtime libraries in .rt/:
#   sh tests/gpu/run-survive.sh [GIB]
# A torch process (gpu_holder.py) holds GIB GiB of random data under a cap of
# GIB+4 GiB and prints a line every 0.2 s. Then:
#  1. vramd is killed with SIGKILL;
#  2. the process is still alive 3 s later, its output still reaches its log
#     file (through the output relay, which now writes it), and the cap is
#     still enforced (4 GiB more is refused, 1 GiB is granted);
#  3. a new vramd on the same state directory, its state file removed, sees
#     its hook reconnect, lists it as an external process, and offloads and restores it by pid;
#  4. the checksums of all its data are intact.
# Prints a summary; everything it wrote is under $OUT (or a temporary dir).
set -u
GIB=${1:-8}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vsv.XXXXXX)}
S=$(mktemp -d /tmp/vss.XXXXXX) # short: sockets live under it
PORT=${PORT:-18660}
cat >"$W/survive.yaml" <<EOF
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  torch:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, "\${PORT}", --gib, "$GIB", --chatty, "0.2"]
    gpus: [0]
    memory: $((GIB + 4))GiB
    health: { path: /health, start_timeout: 240s }
    offload: hook
    env: { VRAM_HOOK_LOG: $W/hook-torch.log }
EOF
LOG="$S/state/logs/torch.log"
C="build/src/ctl/bin/vramctl --url http://127.0.0.1:$PORT"
U="http://127.0.0.1:$PORT"
VPID=
WPID=
cleanup() {
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	[ -n "$WPID" ] && kill -KILL -- "-$WPID" 2>/dev/null
	rm -rf "$S"
}
trap cleanup EXIT
start_vramd() { # log file
	"$VRAMD" --config "$W/survive.yaml" --state-dir "$S/state" >"$1" 2>&1 &
	VPID=$!
	for _ in $(seq 1 50); do curl -sf "$U/healthz" >/dev/null && return 0; sleep 0.2; done
	return 1
}
lines() { grep -c '^gpu_holder: line' "$LOG" 2>/dev/null || echo 0; }
FAILS=0
row() { printf '%-40s %s\n' "$1" "$2" | tee -a "$W/summary.txt"; }
check() { # name condition-result(0/1) detail
	if [ "$2" = 0 ]; then row "$1" "ok: $3"; else row "$1" "FAILED: $3"; FAILS=$((FAILS + 1)); fi
}
: >"$W/summary.txt"

start_vramd "$W/vramd-1.log" || { echo "vramd did not come up" >&2; cat "$W/vramd-1.log" >&2; exit 1; }
$C start torch || { echo "torch did not start" >&2; cat "$LOG" >&2; exit 1; }
WPID=$($C status --json | python3 -c "import json,sys; print([w for w in json.load(sys.stdin)['workloads'] if w['name']=='torch'][0]['pid'])")
WPORT=$(curl -sf "$U/api/workloads/torch" | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
W_URL="http://127.0.0.1:$WPORT"
BASE=$(curl -s "$W_URL/check")
echo "check before: $BASE"
row "torch pid, GPU MiB" "$WPID, $(used "$WPID")"
sleep 1
N0=$(lines)
check "output while vramd runs" $([ "$N0" -gt 0 ]; echo $?) "$N0 lines in $LOG"

echo "== SIGKILL vramd"
kill -KILL "$VPID"
wait "$VPID" 2>/dev/null
VPID=
sleep 3
N1=$(lines)
kill -0 "$WPID" 2>/dev/null
check "torch alive 3 s after vramd died" $? "pid $WPID"
check "its output still reaches the log" $([ "$N1" -ge $((N0 + 10)) ]; echo $?) "$N0 -> $N1 lines"
grep -q 'output relay writes here directly' "$LOG"
check "the relay's note in the log" $? "$(grep -m1 'output relay' "$LOG")"
BIG=$(curl -s "$W_URL/alloc?gib=4")
echo "$BIG" | grep -q '"ok": *false'
check "cap still enforced (4 GiB more)" $? "$BIG"
SMALL=$(curl -s "$W_URL/alloc?gib=1")
echo "$SMALL" | grep -q '"ok": *true'
check "under the cap (1 GiB more)" $? "$SMALL"

echo "== a new vramd"
# without the state file: this vramd knows nothing of the process and drives
# it by pid (run-adopt.sh has the vramd that takes it back from the file)
rm -f "$S/state/state.json"
start_vramd "$W/vramd-2.log" || { echo "the second vramd did not come up" >&2; cat "$W/vramd-2.log" >&2; exit 1; }
T0=$(date +%s.%N)
SEEN=1
for _ in $(seq 1 100); do
	if curl -sf "$U/api/hook/processes" | grep -q "\"pid\": *$WPID\b"; then SEEN=0; break; fi
	sleep 0.1
done
T1=$(date +%s.%N)
check "hook reconnected to the new vramd" $SEEN "after $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s"
curl -s "$U/api/hook/processes" >"$W/processes.json"
OFF=$($C offload --pid "$WPID" 2>&1)
check "offload by pid through the new vramd" $? "$OFF"
row "  GPU MiB while offloaded" "$(used "$WPID")"
RES=$($C restore --pid "$WPID" 2>&1)
check "restore by pid" $? "$RES"
AFTER=$(curl -s "$W_URL/check")
echo "check after: $AFTER"
echo "$AFTER" | grep -q '"ok": *true'
check "contents after vramd died and the cycle" $? "$(echo "$AFTER" | head -c 120)"
N2=$(lines)
check "output went on all along" $([ "$N2" -gt "$N1" ]; echo $?) "$N1 -> $N2 lines"

echo
echo "== summary"
cat "$W/summary.txt"
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
