#!/bin/sh
# SPDX-License-Identifier: MIT
# What libvram.so adds per call, counted in instructions with callgrind on
# the fake driver: the self cost of the hook's own code (the driver's work is
# not counted), divided by the number of calls.
#   bench/hook-overhead.sh [BUILD_DIR] [N]
# BUILD_DIR defaults to build-hook; N (calls per case) to 2000.
set -eu
BUILD=${1:-build-hook}
N=${2:-2000}
HOOK="$BUILD/src/hook/libvram.so"
FAKE_DIR="$BUILD/tests/fakecuda"
PROG="$FAKE_DIR/fc-bench"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for f in "$HOOK" "$PROG"; do
	[ -e "$f" ] || { echo "missing $f: build $BUILD first" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }

# Self instructions of the functions that live in libvram.so.
self_cost() {
	python3 - "$1" <<'PY'
import re, sys
obj_names, fn_obj, cur_ob, cur_fn, total, skip = {}, None, None, None, 0, False
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    m = re.match(r'^ob=\((\d+)\)(?: (.*))?$', line)
    if m:
        if m.group(2): obj_names[m.group(1)] = m.group(2)
        cur_ob = obj_names.get(m.group(1), '')
        continue
    if line.startswith('ob='):
        cur_ob = line[3:]; continue
    if line.startswith('calls='):
        skip = True; continue            # the next cost line is inclusive: not ours
    if line[:1].isdigit() or line[:1] in '+-*':
        if skip: skip = False; continue
        parts = line.split()
        if len(parts) >= 2 and cur_ob and cur_ob.endswith('libvram.so'):
            total += int(parts[1])
        continue
    if line.startswith(('cob=', 'cfn=', 'cfi=', 'cfl=')):
        m = re.match(r'^cob=\((\d+)\)(?: (.*))?$', line)
        if m and m.group(2): obj_names[m.group(1)] = m.group(2)
print(total)
PY
}

run() { # case
	valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$OUT/$1.out" --compress-strings=yes \
		env LD_PRELOAD="$HOOK" LD_LIBRARY_PATH="$FAKE_DIR" VRAM_HOOK_CONTEXT_MEMORY=64MiB \
		VRAM_MEMORY_LIMIT="${2:-}" "$PROG" "$N" "$1" >/dev/null 2>&1
	self_cost "$OUT/$1.out"
}

printf '%-28s %12s %12s\n' "case ($N calls)" "hook Ir" "Ir per call"
for c in alloc info launch; do
	base=$(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$OUT/base-$c.out" \
		env LD_PRELOAD="$HOOK" LD_LIBRARY_PATH="$FAKE_DIR" VRAM_HOOK_CONTEXT_MEMORY=64MiB \
		"$PROG" 1 "$c" >/dev/null 2>&1; self_cost "$OUT/base-$c.out")
	total=$(run "$c" 16GiB)
	per=$(( (total - base) / (N - 1) ))
	label="$c"
	[ "$c" = alloc ] && label="cuMemAlloc_v2+cuMemFree_v2"
	[ "$c" = info ] && label="cuMemGetInfo_v2 (capped)"
	[ "$c" = launch ] && label="cuLaunchKernel"
	printf '%-28s %12s %12s\n' "$label" "$total" "$per"
done
