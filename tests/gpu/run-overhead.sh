#!/bin/sh
# SPDX-License-Identifier: MIT
# Whether libvram.so makes CUDA programs slower, resolved well below 1 % on
# a VM whose whole runs of the same program differ by 10-40 %: the sides
# with and without the hook run in short blocks that alternate on one core
# (ABBA), and each pair of adjacent blocks gives one ratio; the median ratio
# over many pairs comes with a distribution-free 95 % interval
# (tests/gpu/overhead_pairs.py says why this resolves what whole runs cannot).
#   tests/gpu/run-overhead.sh build-gpu/libvram.so
# Steps (about 4 minutes; needs nvcc, cc, taskset and python3 with torch):
#   1. launch_bench ab: one process, the hook's cuLaunchKernel against the
#      driver's own in blocks of AB_LAUNCH_BLOCK launches (default 2048),
#      AB_LAUNCH_PAIRS pairs (512: 1M launches a side); cuMemAlloc_v2 +
#      cuMemFree_v2 pairs the same way (AB_ALLOC_PAIRS blocks of
#      AB_ALLOC_BLOCK, default 256 of 32);
#   2. the same allocations with VRAM_HOOK_VMM_ALLOC=0 (the wrapper's own
#      bookkeeping, the driver's cuMemAlloc underneath);
#   3. two launch_bench serve processes, with and without the hook, taking
#      turns ROUNDS times (default 256): LAUNCHES_PER_ROUND runtime launches
#      (<<<>>>, default 4096: 1M a side), then ALLOCS_PER_ROUND
#      cudaMalloc + cudaFree pairs (default 64);
#   4. two torch processes taking turns INFER_ROUNDS times (default 160),
#      rounds of about INFER_ROUND_S seconds (default 0.06) of an MLP, then
#      of a small transformer encoder (tests/gpu/infer_bench.py);
#   5. which driver entry points one step of each calls, and how often,
#      with tests/gpu/cucount.so preloaded before the hook (COUNT lines).
# Two processes of one program differ by a few percent for their whole
# lives (where ASLR put things), which turn-taking cannot cancel; so steps
# 3 and 4 start SESSIONS process pairs (default 4) one after the other, each
# for ROUNDS/SESSIONS rounds, and as many A/A pairs (both without the hook)
# in between: the A/A ratios measure that bias, and each such row's verdict
# comes from the interval over process pairs, which holds it.
# Many short rounds beat a few long ones: the shorter a pair, the more of
# the machine's slow noise its two blocks share, and the interval narrows
# as 1/sqrt(pairs).
# The measured processes run on core BENCH_CPU (default 2), the one that
# drives the turns on COORD_CPU (default 3). The hook's side has a cap
# (VRAM_MEMORY_LIMIT, default 70GiB) and a control socket, as under vramd.
# STEP_TIMEOUT: seconds per step (default 200). Results, raw pairs and the
# hook log go to $OUT when it is set; the last lines are the summary table.
set -u
HOOK=${1:-${VRAM_HOOK_LIB:-}}
[ -n "$HOOK" ] && [ -e "$HOOK" ] || { echo "usage: $0 /path/to/libvram.so" >&2; exit 2; }
HOOK=$(readlink -f "$HOOK")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
WORK=${OUT:-$(mktemp -d)}
mkdir -p "$WORK"
ROWS="$WORK/rows.jsonl"
BENCH="$WORK/launch_bench"
CPU=${BENCH_CPU:-2}
COORD=${COORD_CPU:-3}
PAIRS="$HERE/overhead_pairs.py"
FAILS=0
: >"$ROWS"
export VRAM_CONTROL="$WORK/ctl-%p.sock" VRAM_HOOK_LOG="$WORK/hook.log" \
	VRAM_MEMORY_LIMIT="${VRAM_MEMORY_LIMIT:-70GiB}"

step() { # name, command...: output in $WORK/name.txt, errors in name.err
	name=$1; shift
	echo "== $name"
	t0=$(date +%s)
	timeout "${STEP_TIMEOUT:-200}" "$@" >"$WORK/$name.txt" 2>"$WORK/$name.err"
	rc=$?
	tail -3 "$WORK/$name.txt"
	echo "($name: $(($(date +%s) - t0)) s)"
	if [ $rc -ne 0 ]; then
		FAILS=$((FAILS + 1))
		echo "$name FAILED (rc=$rc):"
		tail -5 "$WORK/$name.err"
	fi
	return $rc
}

summarize_ab() { # file, label
	"$PY" "$PAIRS" ab "$1" --label "$2" --rows "$ROWS" || { FAILS=$((FAILS + 1)); echo "reading $1 FAILED"; }
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
echo "libvram.so: $HOOK ($(sha256sum "$HOOK" | cut -c1-12)); cores: $(nproc); $(uname -r)"
COUNTER="$WORK/cucount.so"
if ! step build nvcc -O2 -arch=sm_90 -o "$BENCH" "$HERE/launch_bench.cu" -ldl ||
	! step build-count cc -O2 -shared -fPIC -fvisibility=hidden -o "$COUNTER" "$HERE/cucount.c" -ldl; then
	echo "failures: $FAILS"
	exit 1
fi

step ab env LD_PRELOAD="$HOOK" taskset -c "$CPU" "$BENCH" ab "${AB_LAUNCH_PAIRS:-512}" \
	"${AB_LAUNCH_BLOCK:-2048}" "${AB_ALLOC_PAIRS:-256}" "${AB_ALLOC_BLOCK:-32}" &&
	summarize_ab "$WORK/ab.txt" "one process"
step ab-plain-alloc env LD_PRELOAD="$HOOK" VRAM_HOOK_VMM_ALLOC=0 taskset -c "$CPU" "$BENCH" ab 0 0 \
	"${AB_ALLOC_PAIRS:-256}" "${AB_ALLOC_BLOCK:-32}" &&
	summarize_ab "$WORK/ab-plain-alloc.txt" "one process, VRAM_HOOK_VMM_ALLOC=0"

R=${ROUNDS:-256}
K=${SESSIONS:-4}
step turns-runtime taskset -c "$COORD" "$PY" "$PAIRS" turns --hook "$HOOK" --cpu "$CPU" --rounds "$R" \
	--sessions "$K" --control \
	--label "two processes, runtime API" --rows "$ROWS" \
	--job "<<<>>> launch" launch "${LAUNCHES_PER_ROUND:-4096}" 256 ns 1% \
	--job "cudaMalloc + cudaFree" alloc "${ALLOCS_PER_ROUND:-64}" 8 us 1us \
	-- "$BENCH" serve
step turns-torch taskset -c "$COORD" "$PY" "$PAIRS" turns --hook "$HOOK" --cpu "$CPU" --rounds "${INFER_ROUNDS:-160}" \
	--round-s "${INFER_ROUND_S:-0.06}" --sessions "$K" --control --label "two processes, torch" --rows "$ROWS" \
	--job "MLP step" mlp auto 20 us 1% \
	--job "transformer step" transformer auto 5 us 1% \
	-- "$PY" "$HERE/infer_bench.py"
step count env LD_PRELOAD="$COUNTER $HOOK" taskset -c "$CPU" "$PY" "$HERE/infer_bench.py" count \
	"${COUNT_STEPS:-100}"

echo
echo "== summary (raw pairs, logs and the hook log in $WORK)"
grep -h '^AB ' "$WORK/ab.txt" 2>/dev/null
grep -h 'workers ready' "$WORK"/turns-*.err 2>/dev/null
grep -h '^COUNT' "$WORK/count.txt" 2>/dev/null | head -60
"$PY" "$PAIRS" table "$ROWS"
echo "failures: $FAILS"
[ $FAILS -eq 0 ]
