#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of movable stream-ordered pools (one GPU). Builds nothing: pass
# the libvram.so built elsewhere (the build directory carried to the GPU
# machine).
#   tests/gpu/run-pools.sh /path/to/build/src/hook/libvram.so
# Optional: GIB (arrays held per process, default 6), CAP_GIB (default 12),
# CYCLES (default 5), STEP_TIMEOUT (seconds per step, default 600), CTX_MIB
# (most bytes allowed to stay, the context, default 1024). Needs jax and
# torch. Results and the hook log go to $OUT when it is set.
set -u
HOOK=${1:-${VRAM_HOOK_LIB:-}}
[ -n "$HOOK" ] && [ -e "$HOOK" ] || { echo "usage: $0 /path/to/libvram.so" >&2; exit 2; }
HOOK=$(readlink -f "$HOOK")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
[ -n "${OUT:-}" ] && WORK=$OUT
LOG="$WORK/hook.log"
RESULTS="$WORK/results.txt"
FAILS=0
: >"$RESULTS"

run() { # name, env..., -- args
	name=$1; shift
	echo "== $name"
	out=$(timeout "${STEP_TIMEOUT:-600}" env VRAM_CONTROL="$WORK/ctl-%p.sock" VRAM_HOOK_LOG="$LOG" "$@" 2>&1)
	rc=$?
	echo "$out" | tail -8
	line=$(echo "$out" | grep '^RESULT' | tail -1)
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		FAILS=$((FAILS + 1))
		echo "$name FAIL (rc=$rc)" >>"$RESULTS"
	else
		echo "$name ${line#RESULT }" >>"$RESULTS"
	fi
}

G=${GIB:-6}
C=${CYCLES:-5}
CAP="${CAP_GIB:-12}GiB"
# JAX preallocates 75 % of the capped device in one pool (the default).
run jax-default LD_PRELOAD="$HOOK" VRAM_MEMORY_LIMIT="$CAP" \
	"$PY" "$HERE/pool_check.py" jax --gib "$G" --cycles "$C"
# JAX on the CUDA async allocator: cuMemAllocAsync per array.
run jax-cuda-async LD_PRELOAD="$HOOK" VRAM_MEMORY_LIMIT="$CAP" XLA_PYTHON_CLIENT_ALLOCATOR=cuda_async \
	"$PY" "$HERE/pool_check.py" jax --gib "$G" --cycles "$C"
run torch-cudaMallocAsync LD_PRELOAD="$HOOK" VRAM_MEMORY_LIMIT="$CAP" \
	PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync \
	"$PY" "$HERE/pool_check.py" torch-async --gib "$G" --cycles "$C"

echo "== results"
cat "$RESULTS"
[ "$FAILS" -eq 0 ]
