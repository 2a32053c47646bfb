#!/bin/sh
# SPDX-License-Identifier: MIT
# The swap benchmark (issue "a swapped-in model answers at warm speed"), on a
# GPU host from the repository root with build/ built on the build host and
# the Debian runtime libraries in .rt/:
#   sh bench/swap/run.sh [SWAPS]
# Two transformers servers (tests/gpu/tf_server.py: 8B- and 4B-shaped,
# random weights loaded from safetensors) under one vramd, offload: hook, on
# a GPU whose budget holds one of them (each declares 60 % of the GPU).
# Requests through the gateway alternate (bench/swap/swap.py), first with
# overlapped swaps, then with VRAMD_SWAP_OVERLAP=0 (one transfer after the
# other, and without host buffers made ahead), each in a vramd of its own; then the model moved by hand with
# .to('cpu') / .to('cuda') (to_baseline.py). Results: $OUT (or a temporary
# directory): overlap.json, sequential.json, to.json, summary.txt.
set -u
SWAPS=${1:-8}
. "$(dirname "$0")/../../tests/gpu/daemon-lib.sh"
W=${OUT:-$(mktemp -d /tmp/vsw.XXXXXX)}
S=$(mktemp -d /tmp/vsws.XXXXXX)
CACHE=${CACHE:-/var/tmp/vramd-weights}
PORT=${PORT:-18700}
U="http://127.0.0.1:$PORT"
VPID=
cleanup() {
	[ -n "$VPID" ] && kill -TERM "$VPID" 2>/dev/null && wait "$VPID" 2>/dev/null
	rm -rf "$S"
}
trap cleanup EXIT
mkdir -p "$CACHE"
for size in 8b 4b; do
	python3 tests/gpu/tf_server.py --size $size --cache "$CACHE" --prepare >"$W/prepare-$size.txt" 2>&1 ||
		{ cat "$W/prepare-$size.txt" >&2; exit 1; }
done
TOTAL=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0) # MiB
DECLARE=$((TOTAL * 6 / 10))MiB
cat >"$W/swap.yaml" <<YAML
daemon: { listen: "127.0.0.1:$PORT", hook_library: $HOOK, log_level: debug }
gpus: { backend: nvml, reserve: 1GiB }
host: { limit: 100GiB, premake_buffers: PREMAKE }
defaults: { idle: { offload_after: never, release_after: never } }
workloads:
  big:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, 8b, --cache, $CACHE]
    gpus: [0]
    memory: $DECLARE
    health: { path: /health, start_timeout: 300s }
    offload: hook
    env: { VRAM_HOOK_LOG: "$S/hooklogs/big.log" }
  small:
    cmd: [python3, $ROOT/tests/gpu/tf_server.py, --port, "\${PORT}", --size, 4b, --cache, $CACHE]
    gpus: [0]
    memory: $DECLARE
    health: { path: /health, start_timeout: 300s }
    offload: hook
    env: { VRAM_HOOK_LOG: "$S/hooklogs/small.log" }
YAML
run_mode() { # name premake(true|false) [env...]
	name=$1
	sed "s/PREMAKE/$2/" "$W/swap.yaml" >"$W/swap-$name.yaml"
	shift 2
	rm -rf "$S/state" "$S/hooklogs"
	mkdir -p "$S/hooklogs"
	env "$@" "$VRAMD" --config "$W/swap-$name.yaml" --state-dir "$S/state" >"$W/vramd-$name.log" 2>&1 &
	VPID=$!
	for _ in $(seq 1 100); do curl -sf "$U/healthz" >/dev/null && break; sleep 0.1; done
	C="build/src/ctl/bin/vramctl --url $S/state/vramd.sock"
	$C start big >/dev/null || { tail -20 "$W/vramd-$name.log" >&2; return 1; }
	sleep 5 # time for big's host buffers to be made ahead, where they are
	$C start small >/dev/null || { tail -20 "$W/vramd-$name.log" >&2; return 1; }
	python3 bench/swap/swap.py "$U" build/src/ctl/bin/vramctl "$S/state/vramd.sock" "$W/vramd-$name.log" \
		"$W/$name.json" --swaps "$SWAPS" --logs "$S/hooklogs" || return 1
	grep -h "offloaded .* bytes in\|restored .* bytes in\|made .* bytes of pinned host buffers ahead" \
		"$S/hooklogs/big.log" "$S/hooklogs/small.log" >"$W/hook-$name.txt" 2>/dev/null
	kill -TERM "$VPID"
	wait "$VPID" 2>/dev/null
	VPID=
}
# overlapped, host buffers made ahead; then one transfer after the other,
# with every first offload making its buffers on the spot
run_mode overlap true || exit 1
run_mode sequential false VRAMD_SWAP_OVERLAP=0 || exit 1
python3 bench/swap/to_baseline.py --cache "$CACHE" >"$W/to.json" 2>"$W/to.err" || tail -5 "$W/to.err" >&2
python3 bench/swap/report.py "$W" | tee "$W/summary.txt"
