#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of libvram.so with PyTorch. Builds nothing: pass the libvram.so
# built elsewhere (the build directory carried to the GPU machine).
#   tests/gpu/run-hook.sh /path/to/build-hook/src/hook/libvram.so
# or VRAM_HOOK_LIB=/path/to/libvram.so tests/gpu/run-hook.sh
# Optional: BENCH_GIB (default 20), CAP_GIB (default 10), CYCLES (default 20),
# STEP_TIMEOUT (seconds per step, default 240). Results and the hook log go to
# $OUT when it is set.
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
	out=$(timeout "${STEP_TIMEOUT:-240}" env VRAM_CONTROL="$WORK/ctl-%p.sock" VRAM_HOOK_LOG="$LOG" "$@" 2>&1)
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
# Overhead: with and without the hook alternated three times; medians.
for i in 1 2 3; do
	run overhead-without-$i "$PY" "$HERE/hook_check.py" overhead
	run overhead-with-$i LD_PRELOAD="$HOOK" "$PY" "$HERE/hook_check.py" overhead
done

echo
echo "== summary (hook log: $LOG)"
column -t "$RESULTS" 2>/dev/null || cat "$RESULTS"
grep '^overhead-' "$RESULTS" | awk '
	{ hook = ($1 ~ /^overhead-with-/); for (i = 2; i <= NF; i++) { split($i, kv, "=");
	  if (kv[1] == "launch_s") l[hook, ++nl[hook]] = kv[2]; if (kv[1] == "infer_s") f[hook, ++nf[hook]] = kv[2]; } }
	function med(a, h, n,   i, j, t, v) { for (i = 1; i <= n; i++) v[i] = a[h, i];
	  for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t; }
	  return v[int((n + 1) / 2)] }
	END { if (nl[0] && nl[1]) {
	  lw = med(l, 0, nl[0]); lh = med(l, 1, nl[1]); fw = med(f, 0, nf[0]); fh = med(f, 1, nf[1]);
	  printf "overhead (median of %d alternated runs): launches %.3fs -> %.3fs (%+.2f%%), inference %.3fs -> %.3fs (%+.2f%%) (target <= 1%%)\n",
	    nl[0], lw, lh, (lh / lw - 1) * 100, fw, fh, (fh / fw - 1) * 100 } }'
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
