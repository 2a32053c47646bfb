#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU check of vramd's MPS module: two capped workers on one GPU. Run on a GPU
# host from the repository root:  sh tests/gpu/run-mps.sh [GPU] [CAP_GIB]
# mps-tool needs libevent and jansson: build it where they are installed
# (the build host) and carry it, or let this script build it if it can:
#   gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc tests/gpu/mps-tool.c $MPS_SRC \
#       -Wl,-Bstatic -levent_core -ljansson -Wl,-Bdynamic -lpthread -o build-gpu/mps-tool
# with MPS_SRC as set below (mps.c spawns through the supervisor's helpers).
# The result only needs libc. MPS wants root (or the GPU's owner) and, as
# NVIDIA advises, the GPU in EXCLUSIVE_PROCESS mode (not required here).
set -u
GPU=${1:-0}
CAP=${2:-2}
OUT=${OUT:-/tmp/vram-mps-results}
TOOL=${MPS_TOOL:-build-gpu/mps-tool}
MPS_SRC="src/daemon/mps.c src/daemon/supervise.c src/daemon/relay.c src/daemon/logfile.c src/common/fsutil.c src/common/clock.c src/common/log.c"
mkdir -p "$OUT"
if [ ! -x "$TOOL" ]; then
	mkdir -p "$(dirname "$TOOL")"
	gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc tests/gpu/mps-tool.c $MPS_SRC \
		-Wl,-Bstatic -levent_core -ljansson -Wl,-Bdynamic -lpthread -o "$TOOL" ||
		{ echo "cannot build mps-tool here: build it on the build host (see the top of this file)"; exit 1; }
fi
STATE=$(mktemp -d /tmp/vmps.XXXXXX) # short: MPS puts sockets under it
export CAP_GIB=$CAP HOLD_S=${HOLD_S:-8}
"$TOOL" "$STATE" "$GPU" "$CAP" -- python3 tests/gpu/mps_check.py 2>&1 | tee "$OUT/mps.txt"
rc=$?
echo
echo "== MPS logs"
tail -n 20 "$STATE"/mps/*/log/control.log "$STATE"/mps/*/log/server.log 2>/dev/null
echo
echo "== summary"
printf '%-28s %s\n' step result
grep '^step ' "$OUT/mps.txt" | awk '{ printf "%-28s %s\n", $2, $3 }'
grep -E 'worker[01]: ' "$OUT/mps.txt"
if grep -q 'step .* FAIL' "$OUT/mps.txt" || grep -q 'FAIL' "$OUT/mps.txt"; then
	echo "MPS: FAIL"
	exit 1
fi
echo "MPS: PASS"
exit 0
