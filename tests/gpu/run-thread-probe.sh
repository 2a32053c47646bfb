#!/bin/sh
# SPDX-License-Identifier: MIT
# thread_probe.py without the hook, with it preloaded, and with it under a
# cap: is a first request on a new thread slower, and is it the hook?
#   sh tests/gpu/run-thread-probe.sh
set -u
. "$(dirname "$0")/daemon-lib.sh"
CACHE=${CACHE:-/var/tmp/vramd-weights}
SIZE=${SIZE:-1b}
mkdir -p "$CACHE"
python3 tests/gpu/tf_server.py --size "$SIZE" --cache "$CACHE" --prepare >/dev/null 2>&1 || exit 1
python3 tests/gpu/thread_probe.py --size "$SIZE" --cache "$CACHE" --label plain 2>&1 | grep -v Warn
LD_PRELOAD=$HOOK python3 tests/gpu/thread_probe.py --size "$SIZE" --cache "$CACHE" --label hook 2>&1 | grep -v Warn
VRAM_HOOK_MEMBARRIER=0 LD_PRELOAD=$HOOK python3 tests/gpu/thread_probe.py --size "$SIZE" --cache "$CACHE" --label hook-fence 2>&1 | grep -v Warn
