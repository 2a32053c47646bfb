#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""GPU proof of movable stream-ordered pools (run under libvram.so with
VRAM_CONTROL set; run-pools.sh does it).

  pool_check.py jax --gib N --cycles C     JAX (its async or BFC allocator)
  pool_check.py torch-async --gib N --cycles C
                                           PyTorch with
                                           PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync

Each holds about N GiB of arrays, computes a result, offloads and restores
itself C times through its own control socket and checks after every cycle
that the result is identical and that only the context stayed on the device
(the hook's nonmovable bytes at most CTX_MIB, default 1024). Prints one
RESULT line: bytes moved, GB/s out and in (medians), nonmovable bytes.
"""
import argparse
import os
import re
import socket
import statistics
import sys


def ctl(cmd):
    path = os.environ["VRAM_CONTROL"].replace("%p", str(os.getpid()))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall((cmd + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    line = buf.decode().strip()
    fields = {"ok": line.startswith("ok "), "line": line}
    for tok in line.split(" text=")[0].split()[2:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    return fields


def cycle(cycles, compute, expected, ctx_bytes):
    out_rates, in_rates, moved, nonmovable = [], [], 0, 0
    for c in range(cycles):
        off = ctl("offload")
        if not off["ok"]:
            sys.exit(f"offload {c}: {off['line']}")
        moved = int(off["bytes"])
        nonmovable = int(off["nonmovable"])
        if nonmovable > ctx_bytes:
            sys.exit(f"offload {c}: {nonmovable} bytes stayed on the device (more than the context): {off['line']}")
        out_rates.append(moved / max(int(off["usec"]), 1) / 1e3)
        res = ctl("restore")
        if not res["ok"]:
            sys.exit(f"restore {c}: {res['line']}")
        in_rates.append(int(res["bytes"]) / max(int(res["usec"]), 1) / 1e3)
        got = compute()
        if got != expected:
            sys.exit(f"cycle {c}: result {got!r} != {expected!r}")
        print(f"cycle {c}: moved {moved} bytes, out {out_rates[-1]:.1f} GB/s, in {in_rates[-1]:.1f} GB/s", flush=True)
    print(f"RESULT bytes={moved} out_gbps={statistics.median(out_rates):.1f} "
          f"in_gbps={statistics.median(in_rates):.1f} nonmovable={nonmovable}")


def run_jax(gib, cycles, ctx_bytes):
    import jax
    import jax.numpy as jnp
    n = 1 << 28  # 1 GiB of float32 per array
    key = jax.random.PRNGKey(0)
    arrays = []
    for i in range(gib):
        key, sub = jax.random.split(key)
        arrays.append(jax.random.normal(sub, (n,), dtype=jnp.float32))
    w = jax.random.normal(key, (4096, 4096), dtype=jnp.float32)

    def compute():
        s = [float(jnp.sum(a[:: 4097])) for a in arrays]
        m = float(jnp.sum(w @ w))
        return (tuple(s), m)
    expected = compute()
    cycle(cycles, compute, expected, ctx_bytes)


def run_torch(gib, cycles, ctx_bytes):
    import torch
    conf = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
    if "cudaMallocAsync" not in conf:
        sys.exit("set PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync")
    torch.manual_seed(0)
    dev = torch.device("cuda")
    big = [torch.randn(1 << 28, device=dev) for _ in range(gib)]
    # many small tensors, as a model's biases and norms
    small = [torch.randn(64 + i % 512, device=dev) for i in range(4000)]
    lin = torch.nn.Linear(4096, 4096).to(dev)
    x = torch.randn(64, 4096, device=dev)

    def compute():
        with torch.no_grad():
            y = lin(x)
            for _ in range(3):  # frees and reallocations across the cycle
                y = torch.relu(lin(y))
        torch.cuda.synchronize()
        return (tuple(float(b[::4097].sum()) for b in big), float(sum(s.sum() for s in small)),
                float(y.double().sum()))
    expected = compute()
    cycle(cycles, compute, expected, ctx_bytes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["jax", "torch-async"])
    ap.add_argument("--gib", type=int, default=6)
    ap.add_argument("--cycles", type=int, default=5)
    a = ap.parse_args()
    ctx_bytes = int(os.environ.get("CTX_MIB", "1024")) << 20
    if a.what == "jax":
        run_jax(a.gib, a.cycles, ctx_bytes)
    else:
        run_torch(a.gib, a.cycles, ctx_bytes)


if __name__ == "__main__":
    main()
