#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of libvram.so with PyTorch. Builds nothing: pass the libvram.so
# built elsewhere (the build directory carried to the GPU machine).
#   tests/gpu/run-hook.sh /path/to/build-hook/src/hook/libvram.so
# or VRAM_HOOK_LIB=/path/to/libvram.so tests/gpu/run-hook.sh
# Optional: BENCH_GIB (default 20), CAP_GIB (default 10), CYCLES (default 20).
set -u
HOOK=${1:-${VRAM_HOOK_LIB:-}}
[ -n "$HOOK" ] && [ -e "$HOOK" ] || { echo "usage: $0 /path/to/libvram.so" >&2; exit 2; }
HOOK=$(readlink -f "$HOOK")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
LOG="$WORK/hook.log"
RESULTS="$WORK/results.txt"
FAILS=0
: >"$RESULTS"

run() { # name, env..., -- args
	name=$1; shift
	echo "== $name"
	out=$(env VRAM_CONTROL="$WORK/ctl-%p.sock" VRAM_HOOK_LOG="$LOG" "$@" 2>&1)
	rc=$?
	echo "$out" | tail -5
	line=$(echo "$out" | grep '^RESULT' | tail -1)
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		FAILS=$((FAILS + 1))
		echo "$name FAIL (rc=$rc)" >>"$RESULTS"
	else
		echo "$name ${line#RESULT }" >>"$RESULTS"
	fi
}

C=${CYCLES:-20}
run correctness-default LD_PRELOAD="$HOOK" "$PY" "$HERE/hook_check.py" correctness --cycles "$C"
run correctness-expandable LD_PRELOAD="$HOOK" PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
	"$PY" "$HERE/hook_check.py" correctness --cycles "$C"
run correctness-graph LD_PRELOAD="$HOOK" "$PY" "$HERE/hook_check.py" correctness --cycles "$C" --graph
run correctness-graph-expandable LD_PRELOAD="$HOOK" PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
	"$PY" "$HERE/hook_check.py" correctness --cycles "$C" --graph
run cap LD_PRELOAD="$HOOK" VRAM_MEMORY_LIMIT="${CAP_GIB:-10}GiB" \
	"$PY" "$HERE/hook_check.py" cap --cap-gib "${CAP_GIB:-10}"
run cap-expandable LD_PRELOAD="$HOOK" VRAM_MEMORY_LIMIT="${CAP_GIB:-10}GiB" \
	PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$PY" "$HERE/hook_check.py" cap --cap-gib "${CAP_GIB:-10}"
run bench-offload LD_PRELOAD="$HOOK" "$PY" "$HERE/hook_check.py" bench --size-gib "${BENCH_GIB:-20}"
run overhead-without "$PY" "$HERE/hook_check.py" overhead
run overhead-with LD_PRELOAD="$HOOK" "$PY" "$HERE/hook_check.py" overhead

echo
echo "== summary (hook log: $LOG)"
column -t "$RESULTS" 2>/dev/null || cat "$RESULTS"
w=$(grep '^overhead-without' "$RESULTS" | sed -n 's/.*launch_s=\([0-9.]*\).*infer_s=\([0-9.]*\).*/\1 \2/p')
h=$(grep '^overhead-with ' "$RESULTS" | sed -n 's/.*launch_s=\([0-9.]*\).*infer_s=\([0-9.]*\).*/\1 \2/p')
if [ -n "$w" ] && [ -n "$h" ]; then
	echo "$w $h" | awk '{ printf "overhead: launches %+.2f%%, inference %+.2f%% (target <= 1%%)\n", ($3/$1-1)*100, ($4/$2-1)*100 }'
fi
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
