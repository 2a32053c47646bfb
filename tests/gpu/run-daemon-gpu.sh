#!/bin/sh
# SPDX-License-Identifier: MIT
# GPU check of the daemon itself (issue 4), run on a GPU host from the
# repository root after building here:
#   sh tests/gpu/run-daemon-gpu.sh [GIB]
# Runs the real vramd from build/ (runtime libraries from
# .rt/root/usr/lib/x86_64-linux-gnu when present) with a torch workload under
# offload: checkpoint and two share: mps replicas; drives it with vramctl and
# the REST API: offload frees the GPU, restore brings the data back intact,
# on 2+ GPUs a restore lands on the other GPU when its own is full, and each
# MPS worker is held to its cap. Needs python3 with torch. Prints a summary
# table; about 2 minutes with the default 8 GiB.
set -u
GIB=${1:-8}
RT="$(pwd)/.rt/root/usr/lib/x86_64-linux-gnu"
if [ -d "$RT" ]; then
	LD_LIBRARY_PATH="$RT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	export LD_LIBRARY_PATH
fi
export CUDA_DEVICE_ORDER=PCI_BUS_ID
test -x build/src/daemon/bin/vramd || { echo "build/src/daemon/bin/vramd is missing: build first" >&2; exit 1; }
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader || true
exec timeout 290 python3 tests/gpu/daemon_check.py --build build --gib "$GIB"
