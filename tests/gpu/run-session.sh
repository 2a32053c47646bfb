#!/bin/sh
# SPDX-License-Identifier: MIT
# Several GPU proofs in one call on a GPU host (repository root, build/ and
# .rt/ carried): the swap benchmark, then the stream-ordered pools and the
# CUDA IPC checks of the hook. Each writes under $OUT/<name>/.
#   sh tests/gpu/run-session.sh [SWAPS]
set -u
O=${OUT:-$(mktemp -d /tmp/vgs.XXXXXX)}
mkdir -p "$O/swap" "$O/pools" "$O/ipc"
OUT="$O/swap" sh bench/swap/run.sh "${1:-6}" >"$O/swap.txt" 2>&1
echo "swap: rc $?"
OUT="$O/pools" STEP_TIMEOUT=${STEP_TIMEOUT:-90} GIB=${GIB:-4} CYCLES=${CYCLES:-3} \
	sh tests/gpu/run-pools.sh build/src/hook/libvram.so >"$O/pools.txt" 2>&1
echo "pools: rc $?"
OUT="$O/ipc" STEP_TIMEOUT=${STEP_TIMEOUT:-90} CYCLES=${CYCLES:-3} \
	sh tests/gpu/run-ipc.sh build/src/hook/libvram.so >"$O/ipc.txt" 2>&1
echo "ipc: rc $?"
tail -40 "$O/swap.txt"
tail -8 "$O/pools.txt"
tail -6 "$O/ipc.txt"
