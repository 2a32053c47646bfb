#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU proof of libvram.so with PyTorch. Builds nothing: pass the libvram.so
# built elsewhere (the build directory carried to the GPU machine).
#   tests/gpu/run-hook.sh /path/to/build-hook/src/hook/libvram.so
# or VRAM_HOOK_LIB=/path/to/libvram.so tests/gpu/run-hook.sh
# Optional: BENCH_GIB (default 20), CAP_GIB (default 10), CYCLES (default 20),
# STEP_TIMEOUT (seconds per step, default 240), PIN_VARIANTS (bench runs,
# default "default hostalloc"; also threads1, and copy-4x64M = the copies as
# they were cut before, four streams of 64 MiB chunks, copy-1x256M = one
# stream), BENCH_CPU (core for the overhead runs,
# default 2), ROUNDS (alternations, default 5), LAUNCHES (default 1000000),
# INFER (inference iterations, default 20000), WARM_ROUNDS (warm offloads and
# restores per bench run, default 5). Needs nvcc and taskset.
# Results and the hook log go to $OUT when it is set; the bench steps' phase
# timings (where each offload and restore spent its time, from the hook's
# answers) are shown with each step and again at the end (phases.txt).
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
PHASES="$WORK/phases.txt"
FAILS=0
: >"$RESULTS"
: >"$PHASES"

run() { # name, env..., -- args
	name=$1; shift
	echo "== $name"
	out=$(timeout "${STEP_TIMEOUT:-240}" env VRAM_CONTROL="$WORK/ctl-%p.sock" VRAM_HOOK_LOG="$LOG" "$@" 2>&1)
	rc=$?
	echo "$out" | grep -v '^PHASES' | tail -5
	echo "$out" | grep '^PHASES' | sed "s/^PHASES /$name: /" | tee -a "$PHASES"
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
# First offload: the default way of making pinned buffers, then the
# alternatives (PIN_VARIANTS: default, hostalloc, threads1 = one thread;
# copy-4x64M and copy-1x256M change how the copies are cut instead).
for v in ${PIN_VARIANTS:-default hostalloc}; do
	case $v in
	default) set -- ;;
	hostalloc) set -- VRAM_HOOK_PIN_METHOD=hostalloc ;;
	threads1) set -- VRAM_HOOK_PIN_THREADS=1 ;;
	copy-4x64M) set -- VRAM_HOOK_COPY_STREAMS=4 VRAM_HOOK_COPY_CHUNK=64MiB ;;
	copy-1x256M) set -- VRAM_HOOK_COPY_STREAMS=1 VRAM_HOOK_COPY_CHUNK=256MiB ;;
	*) echo "unknown pin variant $v" >&2; continue ;;
	esac
	name=bench-offload; [ "$v" = default ] || name=bench-offload-$v
	run "$name" LD_PRELOAD="$HOOK" "$@" "$PY" "$HERE/hook_check.py" bench --size-gib "${BENCH_GIB:-20}" \
		--warm-rounds "${WARM_ROUNDS:-5}"
done

# Overhead, each process pinned to one core (BENCH_CPU, default 2), without
# and with the hook alternated ROUNDS times (default 5): launch_bench (1M
# empty-kernel launches through the runtime API, cudaMalloc/cudaFree pairs)
# and the torch inference loop.
CPU=${BENCH_CPU:-2}
ROUNDS=${ROUNDS:-5}
BENCH="$WORK/launch_bench"
if ! nvcc -O2 -arch=sm_90 -o "$BENCH" "$HERE/launch_bench.cu"; then
	FAILS=$((FAILS + 1))
	echo "launch-bench-build FAIL" >>"$RESULTS"
fi
i=1
while [ $i -le "$ROUNDS" ]; do
	if [ -x "$BENCH" ]; then
		run launch-without-$i taskset -c "$CPU" "$BENCH" "${LAUNCHES:-1000000}"
		run launch-with-$i LD_PRELOAD="$HOOK" taskset -c "$CPU" "$BENCH" "${LAUNCHES:-1000000}"
	fi
	run infer-without-$i taskset -c "$CPU" "$PY" "$HERE/hook_check.py" overhead --launches 0 --infer "${INFER:-20000}"
	run infer-with-$i LD_PRELOAD="$HOOK" taskset -c "$CPU" "$PY" "$HERE/hook_check.py" overhead \
		--launches 0 --infer "${INFER:-20000}"
	i=$((i + 1))
done

echo
echo "== summary (hook log: $LOG)"
column -t "$RESULTS" 2>/dev/null || cat "$RESULTS"
if [ -s "$PHASES" ]; then
	echo
	echo "== where offloads and restores spent their time (ms; offload: drain + sync + copy + tail = total,"
	echo "   release overlaps copy; restore: head + copy + tail = total, create and map overlap copy)"
	column -t "$PHASES" 2>/dev/null || cat "$PHASES"
fi
# Median and spread ((max - min) / median) of each figure, without -> with.
grep -E '^(launch|infer)-with' "$RESULTS" | awk '
	{ hook = ($1 ~ /-with-/); for (i = 2; i <= NF; i++) { split($i, kv, "=");
	  if (kv[1] == "launch_ns" || kv[1] == "alloc_us" || kv[1] == "infer_s") v[kv[1], hook, ++n[kv[1], hook]] = kv[2] } }
	function stat(k, h,   i, j, t, a, m) { m = n[k, h]; for (i = 1; i <= m; i++) a[i] = v[k, h, i] + 0;
	  for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t; }
	  med = (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2; spread = med ? (a[m] - a[1]) / med * 100 : 0 }
	function show(k, label, unit, fmt,   w, ws, h, hs) { if (!n[k, 0] || !n[k, 1]) { printf "%s: no data; ", label; return }
	  stat(k, 0); w = med; ws = spread; stat(k, 1); h = med; hs = spread
	  printf "%s " fmt " -> " fmt " %s (%+.2f%%; spread %.1f%% / %.1f%%); ", label, w, h, unit, (h / w - 1) * 100, ws, hs }
	END { printf "overhead (median of %d alternated runs each, one core): ", n["launch_ns", 0] ? n["launch_ns", 0] : n["infer_s", 0]
	  show("launch_ns", "launches", "ns/launch", "%.1f"); show("alloc_us", "alloc+free", "us/pair", "%.2f")
	  show("infer_s", "inference", "s", "%.3f"); printf "target <= 1%% (a difference below the spread is noise)\n" }'
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
