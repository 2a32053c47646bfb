#!/bin/sh
# SPDX-License-Identifier: MIT
# Offload/restore speed of libvram.so on a GPU: a PyTorch process holding
# SIZE GiB of random data is offloaded (fresh host buffers), restored, then
# offloaded (warm) and restored WARM_ROUNDS times (default 5), through its
# VRAM_CONTROL socket; then the same tensors go through torch .to('cpu') /
# .to('cuda') for comparison. Prints where each offload and restore spent
# its time (the hook's phase timings, in ms), then the figures one per line.
#   bench/offload.sh /path/to/libvram.so [SIZE_GIB]
set -eu
HOOK=$(readlink -f "${1:?usage: $0 /path/to/libvram.so [SIZE_GIB]}")
DIR=$(mktemp -d)
VRAM_CONTROL="$DIR/ctl-%p.sock" VRAM_HOOK_LOG="$DIR/hook.log" LD_PRELOAD="$HOOK" \
	${PYTHON:-python3} "$(dirname "$0")/../tests/gpu/hook_check.py" bench --size-gib "${2:-20}" \
	--warm-rounds "${WARM_ROUNDS:-5}" >"$DIR/out.txt"
grep '^PHASES' "$DIR/out.txt" | sed 's/^PHASES //'
grep '^RESULT' "$DIR/out.txt" | tr ' ' '\n' | sed 1d
echo "hook log: $DIR/hook.log"
