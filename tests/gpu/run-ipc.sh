#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of CUDA IPC between two hooked processes (one GPU): a
# torch.multiprocessing program sharing CUDA tensors, and raw
# cudaIpcGetMemHandle/cudaIpcOpenMemHandle (vLLM's custom all-reduce
# pattern), with and without offloads in between. Builds nothing: pass the
# libvram.so built elsewhere (the build directory carried to the GPU host).
#   tests/gpu/run-ipc.sh /path/to/build/src/hook/libvram.so
# Optional: MIB (shared bytes, default 512), CYCLES (default 5),
# STEP_TIMEOUT (seconds per step, default 600). Needs torch.
set -u
HOOK=${1:-${VRAM_HOOK_LIB:-}}
[ -n "$HOOK" ] && [ -e "$HOOK" ] || { echo "usage: $0 /path/to/libvram.so" >&2; exit 2; }
HOOK=$(readlink -f "$HOOK")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
[ -n "${OUT:-}" ] && WORK=$OUT
RESULTS="$WORK/results.txt"
FAILS=0
: >"$RESULTS"
for what in raw mp; do
	echo "== $what"
	out=$(timeout "${STEP_TIMEOUT:-600}" env LD_PRELOAD="$HOOK" VRAM_CONTROL="$WORK/ctl-%p.sock" \
		VRAM_HOOK_LOG="$WORK/hook.log" "$PY" "$HERE/ipc_check.py" "$what" --mib "${MIB:-512}" \
		--cycles "${CYCLES:-5}" 2>&1)
	rc=$?
	echo "$out" | tail -8
	line=$(echo "$out" | grep '^RESULT' | tail -1)
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		FAILS=$((FAILS + 1))
		echo "$what FAIL (rc=$rc)" >>"$RESULTS"
	else
		echo "$what ${line#RESULT }" >>"$RESULTS"
	fi
done
echo "== results"
cat "$RESULTS"
[ "$FAILS" -eq 0 ]
