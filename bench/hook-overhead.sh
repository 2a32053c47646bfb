#!/bin/sh
# SPDX-License-Identifier: MIT
# What libvram.so adds per call, counted in instructions with callgrind on
# the fake driver. Collection is switched on when a cu* function is entered
# and off again in every cu* function of the driver that the wrapper calls
# (--toggle-collect='cu*' toggles at each entry and exit), and each wrapper's
# inclusive cost is read: the hook's own code and the libc it calls (locks,
# malloc), never the driver's work. A run with one call is subtracted (it
# holds the driver's loading and each wrapper's first call), and the rest is
# divided by N - 1.
#   bench/hook-overhead.sh [BUILD_DIR] [N]
# BUILD_DIR defaults to build-hook; N (calls per case) to 2000.
# Columns: "hook code" counts only instructions inside libvram.so (as the
# earlier figures did); "with libc" adds the libc functions the wrapper
# calls; "ns" converts the latter at one instruction per cycle at 3 GHz (a
# rough figure: this code runs at more than one instruction per cycle when
# its data is in cache).
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
[ "$N" -ge 2 ] || { echo "N must be at least 2" >&2; exit 2; }

collect() { # case, calls -> $OUT/case-calls.out
	valgrind --tool=callgrind --trace-children=yes --collect-atstart=no --toggle-collect='cu*' \
		--callgrind-out-file="$OUT/$1-$2.out" \
		env LD_PRELOAD="$HOOK" LD_LIBRARY_PATH="$FAKE_DIR" VRAM_HOOK_CONTEXT_MEMORY=64MiB \
		VRAM_MEMORY_LIMIT=16GiB "$PROG" "$2" "$1" >/dev/null 2>&1
}

for c in launch alloc info; do
	collect "$c" 1
	collect "$c" "$N"
done

python3 - "$OUT" "$N" <<'PY'
import collections, re, sys

out, n = sys.argv[1], int(sys.argv[2])


def parse(path):
    """Per (object, function): self and inclusive instructions."""
    tables = {"ob": {}, "fn": {}, "fl": {}}
    kinds = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn",
             "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl"}
    self_ir, incl_ir = collections.Counter(), collections.Counter()
    ob = fn = None
    call_cost_next = False
    for line in open(path):
        line = line.rstrip("\n")
        key, eq, rest = line.partition("=")
        if eq and key in kinds:
            m = re.match(r"^\((\d+)\)(?: (.*))?$", rest)
            name = rest
            if m:
                table = tables[kinds[key]]
                if m.group(2) is not None:
                    table[m.group(1)] = m.group(2)
                name = table.get(m.group(1), "")
            if key == "ob":
                ob = name
            elif key == "fn":
                fn = name
            continue
        if line.startswith("calls="):
            call_cost_next = True  # the next cost line is the call's inclusive cost
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            ir = int(parts[1]) if len(parts) > 1 else 0
            if not call_cost_next:
                self_ir[(ob, fn)] += ir
            incl_ir[(ob, fn)] += ir
            call_cost_next = False
    return self_ir, incl_ir


def hook(counter, fn=None):
    return sum(v for (ob, f), v in counter.items()
               if ob and ob.endswith("libvram.so") and (fn is None or f == fn))


def per_call(case, wrappers):
    """Instructions per call in libvram.so alone, and with the libc it calls.

    "With libc" is the wrappers' inclusive cost: the program's direct calls
    of unwrapped driver functions (cuCtxSynchronize) are switched on by the
    toggle too, and are left out this way."""
    (s1, i1), (sn, i_n) = (parse(f"{out}/{case}-{k}.out") for k in (1, n))
    own = (hook(sn) - hook(s1)) / (n - 1)
    with_libc = sum(hook(i_n, fn) - hook(i1, fn) for fn in wrappers) / (n - 1)
    return own, with_libc


rows = [
    ("cuLaunchKernel", "launch", ["cuLaunchKernel"], True),
    ("cuMemAlloc_v2", "alloc", ["cuMemAlloc_v2"], False),
    ("cuMemFree_v2", "alloc", ["cuMemFree_v2"], False),
    ("cuMemAlloc_v2 + cuMemFree_v2", "alloc", ["cuMemAlloc_v2", "cuMemFree_v2"], True),
    ("cuMemGetInfo_v2 (capped)", "info", ["cuMemGetInfo_v2"], True),
]
print(f"instructions per call on the fake driver (callgrind, {n} calls, driver excluded)")
print(f"{'call':<30} {'hook code':>10} {'with libc':>10} {'ns':>6}")
for label, case, wrappers, whole_case in rows:
    own, with_libc = per_call(case, wrappers)
    own_text = f"{own:.0f}" if whole_case else "-"  # libvram.so's own share is per case, not per wrapper
    print(f"{label:<30} {own_text:>10} {with_libc:>10.0f} {with_libc / 3:>6.0f}")
PY
