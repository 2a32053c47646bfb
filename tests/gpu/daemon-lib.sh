# SPDX-License-Identifier: MIT
# Sourced by the GPU checks that run the real vramd (run-hook-daemon.sh,
# run-survive.sh), from the repository root with build/ built on the build
# host and the Debian runtime libraries in .rt/. Sets ROOT, HOOK and VRAMD,
# the library path and CUDA_DEVICE_ORDER; exits when build/ lacks vramd or
# libvram.so. used PID prints the GPU memory (MiB) the process holds.
ROOT=$(pwd)
RT="$ROOT/.rt/root/usr/lib/x86_64-linux-gnu"
[ -d "$RT" ] && export LD_LIBRARY_PATH="$RT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID
HOOK="$ROOT/build/src/hook/libvram.so"
VRAMD="$ROOT/build/src/daemon/bin/vramd"
test -x "$VRAMD" && test -e "$HOOK" || { echo "build/ is missing vramd or libvram.so" >&2; exit 1; }
used() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits | awk -v p="$1" -F', ' '$1 == p { print $2 }'; }
