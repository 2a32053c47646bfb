#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An MPS worker for tests/gpu/run-mps.sh, started by mps-tool with its MPS
environment (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT etc.) and WORKER_ROLE:
  role 0: allocates more than its cap (CAP_GIB + 1 GiB): must fail with
          out-of-memory; then allocates half its cap, which must work;
  role 1: allocates half its cap and computes the whole time, checking the
          results: it must not notice its neighbour's failure.
Both hold for HOLD_S seconds so that status can see them. Exit 0 = as expected.
"""
import os
import sys
import time

import torch

role = int(os.environ.get("WORKER_ROLE", "0"))
cap = int(os.environ.get("CAP_GIB", "2"))
hold = float(os.environ.get("HOLD_S", "8"))
tag = f"worker{role}"
dev = torch.device("cuda", 0)
free, total = torch.cuda.mem_get_info(dev)
print(f"{tag}: limit={os.environ.get('CUDA_MPS_PINNED_DEVICE_MEM_LIMIT')} "
      f"threads={os.environ.get('CUDA_MPS_ACTIVE_THREAD_PERCENTAGE')} "
      f"visible={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')} free={free >> 20}MiB total={total >> 20}MiB",
      flush=True)
ok = True
if role == 0:
    try:
        big = torch.empty((cap + 1) << 30, dtype=torch.uint8, device=dev)
        torch.cuda.synchronize()
        print(f"{tag}: FAIL: {cap + 1} GiB allocated over a {cap} GiB cap", flush=True)
        ok = False
        del big
    except torch.OutOfMemoryError as e:
        print(f"{tag}: over-cap allocation refused: {str(e).splitlines()[0]}", flush=True)
    torch.cuda.empty_cache()
    try:
        half = torch.ones((cap << 30) // 2, dtype=torch.uint8, device=dev)
        ok = ok and int(half[::1 << 20].sum().item()) == half[::1 << 20].numel()
        print(f"{tag}: within-cap allocation ok", flush=True)
        time.sleep(hold)
    except torch.OutOfMemoryError as e:
        print(f"{tag}: FAIL: within-cap allocation refused: {e}", flush=True)
        ok = False
else:
    half = torch.ones((cap << 30) // 2, dtype=torch.uint8, device=dev)
    a = torch.randn(1024, 1024, device=dev)
    ref = (a @ a).sum().item()
    end = time.time() + hold
    n = 0
    while time.time() < end:
        v = (a @ a).sum().item()
        if abs(v - ref) > 1e-3 * max(1.0, abs(ref)):
            print(f"{tag}: FAIL: result changed {v} != {ref}", flush=True)
            ok = False
            break
        n += 1
    print(f"{tag}: {n} matmuls, results unchanged" if ok else f"{tag}: FAIL", flush=True)
sys.exit(0 if ok else 1)
