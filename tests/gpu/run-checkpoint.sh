#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU check of the checkpoint engine's driver calls. Run on a GPU host from
# the repository root:  sh tests/gpu/run-checkpoint.sh [GIB]
# Needs gcc, python3 with torch, nvidia-smi; builds vram-ckpt from
# src/gpu/cudadrv.c (libc + libdl only). On a machine with 2+ GPUs of one
# model it also restores onto the other GPU. Prints a summary table.
set -u
GIB=${1:-8}
OUT=${OUT:-/tmp/vram-ckpt-results}
mkdir -p "$OUT"
TOOL="$OUT/vram-ckpt"
export CUDA_DEVICE_ORDER=PCI_BUS_ID
gcc -O2 -std=c11 -D_GNU_SOURCE -Wall -Isrc tests/gpu/vram-ckpt.c src/gpu/cudadrv.c -ldl -o "$TOOL" || exit 1
"$TOOL" devices | tee "$OUT/devices.txt"
NGPU=$(($(wc -l <"$OUT/devices.txt") - 1))

run() { # name, args...
	name=$1; shift
	echo "== $name" >&2
	python3 tests/gpu/ckpt_check.py run --tool "$TOOL" "$@" | tee "$OUT/$name.txt" | grep '^RESULT' | sed "s/^RESULT /$name /"
}

{
	run idle --gib "$GIB"
	run busy --gib "$GIB" --busy
	if [ "$NGPU" -ge 2 ]; then
		run move --gib "$GIB" --move
	fi
} >"$OUT/results.txt"

python3 - "$OUT/results.txt" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    name, js = line.split(" ", 1)
    r = json.loads(js)
    rows.append((name, r))
print()
print(f"{'case':6} {'GiB':>4} {'out s':>7} {'out GB/s':>9} {'lock s':>7} {'in s':>7} {'in GB/s':>8} {'freed':>6} {'check':>6} {'compute':>8} {'moved':>6} {'result':>7}")
ok_all = True
for name, r in rows:
    f = lambda k, fmt: (fmt % r[k]) if k in r else "-"
    print(f"{name:6} {r['gib']:>4} {f('offload_s','%.2f'):>7} {f('offload_gbps','%.2f'):>9} {f('offload_lock_s','%.2f'):>7} "
          f"{f('restore_s','%.2f'):>7} {f('restore_gbps','%.2f'):>8} {str(r.get('freed','-')):>6} "
          f"{('ok' if str(r.get('check','')).startswith('check ok') else 'BAD'):>6} "
          f"{('ok' if str(r.get('compute','')).startswith('compute ok') else 'BAD'):>8} "
          f"{str(r.get('moved_to_gpu1','-')):>6} {('PASS' if r['ok'] else 'FAIL'):>7}")
    if not r["ok"]:
        ok_all = False
        print(f"   {name}: {r.get('error', '')}")
sys.exit(0 if ok_all else 1)
PY
