#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of the hook engine through the real vramd (issues 3, 4 and 5), run
# on a GPU host from the repository root, with build/ built on the build host
# and the Debian runtime libraries in .rt/:
#   sh tests/gpu/run-hook-daemon.sh [GIB]
# - torch:  a torch process holding GIB GiB of random data (offload: hook);
#           offloaded with vramctl, then woken by a request through the
#           gateway (/w/torch/health): the time from that request to the first
#           byte of its response includes the restore. Contents are checked.
# - hc:     a smaller one under offload: hook+checkpoint: after the offload the
#           process holds no GPU memory at all (the context is freed too).
# - mpsw:   a share: mps worker under offload: hook (the hook works under MPS,
#           the driver checkpoint does not).
# Prints a summary; everything it wrote is under $OUT (or a temporary dir).
set -u
GIB=${1:-20}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vhk.XXXXXX)}
S=$(mktemp -d /tmp/vhs.XXXXXX) # short: sockets live under it
PORT=${PORT:-18650}
MPS_WL=""
if command -v nvidia-cuda-mps-control >/dev/null; then
	MPS_WL="
  mpsw:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, \"\${PORT}\", --gib, \"2\"]
    gpus: [0]
    memory: 6GiB
    share: mps
    health: { path: /health, start_timeout: 180s }
    offload: hook"
fi
cat >"$W/hook.yaml" <<EOF
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  torch:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, "\${PORT}", --gib, "$GIB"]
    gpus: [0]
    memory: $((GIB + 6))GiB
    health: { path: /health, start_timeout: 240s }
    offload: hook
    env: { VRAM_HOOK_LOG: $W/hook-torch.log }
  hc:
    cmd: [python3, $ROOT/tests/gpu/gpu_holder.py, --port, "\${PORT}", --gib, "4"]
    gpus: [0]
    memory: 8GiB
    health: { path: /health, start_timeout: 180s }
    offload: hook+checkpoint
    env: { VRAM_HOOK_LOG: $W/hook-hc.log }$MPS_WL
EOF
"$VRAMD" --config "$W/hook.yaml" --state-dir "$S/state" >"$W/vramd.log" 2>&1 &
VPID=$!
trap 'kill -TERM $VPID 2>/dev/null; wait $VPID 2>/dev/null' EXIT
C="build/src/ctl/bin/vramctl --url http://127.0.0.1:$PORT"
U="http://127.0.0.1:$PORT"
for _ in $(seq 1 50); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.2; done
wl() { $C status --json | python3 -c "import json,sys; w=[x for x in json.load(sys.stdin)['workloads'] if x['name']=='$1'][0]; print($2)"; }
FAILS=0
row() { printf '%-34s %s\n' "$1" "$2" | tee -a "$W/summary.txt"; }
: >"$W/summary.txt"

echo "== torch ($GIB GiB, offload: hook)"
$C start torch || FAILS=$((FAILS + 1))
P=$(wl torch "w['pid']")
row "torch engine" "$(wl torch "w['engine']['name'], w['engine']['why']")"
row "torch GPU MiB after start" "$(used "$P")"
BASE=$(curl -s "$U/w/torch/check")
echo "check before: $BASE"
for i in 1 2 3; do
	OFF=$($C offload torch 2>&1) || FAILS=$((FAILS + 1))
	row "offload $i" "$OFF"
	row "  GPU MiB while offloaded" "$(used "$P")"
	T=$(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total} %{http_code}' "$U/w/torch/health")
	row "  gateway request -> first byte (s)" "$T"
	row "  state after request" "$(wl torch "w['state'], w['engine']['last_seconds']")"
done
AFTER=$(curl -s "$U/w/torch/check")
echo "check after: $AFTER"
if echo "$AFTER" | grep -q '"ok": *true'; then row "torch contents after 3 cycles" "intact"; else row "torch contents after 3 cycles" "BAD"; FAILS=$((FAILS + 1)); fi
row "torch hook status" "$(wl torch "w['hook']")"
$C stop torch >/dev/null 2>&1

echo "== hc (offload: hook+checkpoint)"
$C start hc || FAILS=$((FAILS + 1))
P=$(wl hc "w['pid']")
row "hc GPU MiB after start" "$(used "$P")"
OFF=$($C offload hc 2>&1) || FAILS=$((FAILS + 1))
row "hc offload" "$OFF"
row "  GPU MiB while offloaded" "$(used "$P")"
RES=$($C restore hc 2>&1) || FAILS=$((FAILS + 1))
row "hc restore" "$RES"
if curl -s "$U/w/hc/check" | grep -q '"ok": *true'; then row "hc contents" "intact"; else row "hc contents" "BAD"; FAILS=$((FAILS + 1)); fi
$C stop hc >/dev/null 2>&1

if [ -n "$MPS_WL" ]; then
	echo "== mpsw (share: mps, offload: hook)"
	$C start mpsw || FAILS=$((FAILS + 1))
	row "mpsw mps" "$(wl mpsw "w['mps']")"
	OFF=$($C offload mpsw 2>&1) || FAILS=$((FAILS + 1))
	row "mpsw offload" "$OFF"
	RES=$($C restore mpsw 2>&1) || FAILS=$((FAILS + 1))
	row "mpsw restore" "$RES"
	if curl -s "$U/w/mpsw/check" | grep -q '"ok": *true'; then row "mpsw contents" "intact"; else row "mpsw contents" "BAD"; FAILS=$((FAILS + 1)); fi
	$C stop mpsw >/dev/null 2>&1
fi
kill -TERM $VPID; wait $VPID 2>/dev/null
trap - EXIT
echo
echo "== summary"
cat "$W/summary.txt"
# the last client's quit is asynchronous: the control daemon goes within a few seconds
for _ in $(seq 1 20); do pgrep nvidia-cuda-mps >/dev/null || break; sleep 0.5; done
echo "left MPS daemons after 10 s at most: $(pgrep -c nvidia-cuda-mps || true)"
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
