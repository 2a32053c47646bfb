#!/bin/sh
# SPDX-License-Identifier: MIT
# Multi-GPU proof of tensor-parallel groups (needs 2 GPUs): a TP-2
# torch.distributed NCCL model server (tp2_server.py under torchrun) run by
# the real vramd with offload: hook and a cap per GPU, offloaded and restored
# CYCLES times as one group (every gate closes before any rank copies, every
# rank is restored before any gate opens); after each restore a request
# through the gateway runs steps with an all_reduce each and must give the
# checksum it gave before the first offload. Run from the repository root
# with build/ built on the build host and the Debian runtime libraries in .rt/:
#   sh tests/gpu/run-tp2.sh [GIB_PER_RANK]
# Optional: CYCLES (default 20), PORT (default 18660). Prints each cycle's
# offload and restore (bytes, seconds and the per-process rates from the
# hook log) and the group's wall times; everything goes under $OUT.
set -u
GIB=${1:-8}
CYCLES=${CYCLES:-20}
. "$(dirname "$0")/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vtp.XXXXXX)}
S=$(mktemp -d /tmp/vts.XXXXXX)
PORT=${PORT:-18660}
NG=$(nvidia-smi -L | wc -l)
[ "$NG" -ge 2 ] || { echo "needs 2 GPUs, found $NG" >&2; exit 2; }
cat >"$W/tp2.yaml" <<YAML
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK }
gpus: { backend: nvml, reserve: 1GiB }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  tp2:
    cmd: [torchrun, --standalone, --nproc_per_node, "2", $ROOT/tests/gpu/tp2_server.py, --gib, "$GIB"]
    gpus: 2
    memory: $((GIB + 6))GiB
    health: { path: /health, start_timeout: 300s }
    offload: hook
    env: { VRAM_HOOK_LOG: $W/hook-tp2.log }
YAML
"$VRAMD" --config "$W/tp2.yaml" --state-dir "$S/state" >"$W/vramd.log" 2>&1 &
VPID=$!
trap 'kill -TERM $VPID 2>/dev/null; wait $VPID 2>/dev/null' EXIT
C="build/src/ctl/bin/vramctl --url http://127.0.0.1:$PORT"
U="http://127.0.0.1:$PORT"
for _ in $(seq 1 50); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.2; done
FAILS=0
row() { printf '%-30s %s\n' "$1" "$2" | tee -a "$W/summary.txt"; }
: >"$W/summary.txt"
$C start tp2 || { echo "tp2 did not start; see $W/vramd.log" >&2; exit 1; }
BASE=$(curl -s "$U/w/tp2/check")
row "checksum before" "$BASE"
row "hooked processes" "$($C status --json | python3 -c "import json,sys; w=[x for x in json.load(sys.stdin)['workloads'] if x['name']=='tp2'][0]; print(len(w['hook']['processes']))")"
for i in $(seq 1 "$CYCLES"); do
	T0=$(date +%s.%N)
	OFF=$($C offload tp2 2>&1) || FAILS=$((FAILS + 1))
	T1=$(date +%s.%N)
	row "offload $i ($(echo "$T1 - $T0" | bc) s wall)" "$OFF"
	nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/    GPU /' | tee -a "$W/summary.txt"
	T0=$(date +%s.%N)
	RES=$($C restore tp2 2>&1) || FAILS=$((FAILS + 1))
	T1=$(date +%s.%N)
	row "restore $i ($(echo "$T1 - $T0" | bc) s wall)" "$RES"
	GOT=$(curl -s "$U/w/tp2/check")
	if [ "$GOT" != "$BASE" ]; then
		FAILS=$((FAILS + 1))
		row "  checksum after $i" "$GOT (expected $BASE) FAIL"
	fi
done
echo "== per-process rates (hook log)"
grep -E "offloaded|restored" "$W/hook-tp2.log" | sed -E 's/^[0-9.]+ libvram\[([0-9]+)\] info: /pid \1: /' | cut -c1-160 | tail -8
row "cycles" "$CYCLES, failures $FAILS"
[ "$FAILS" -eq 0 ]
