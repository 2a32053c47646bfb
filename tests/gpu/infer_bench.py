#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Torch inference loops, as one side of the turn-taking comparison with and
without libvram.so (tests/gpu/overhead_pairs.py turns ... -- python3
infer_bench.py; tests/gpu/run-overhead.sh runs it).

Two small models, each run until the GPU is done (torch.cuda.synchronize
ends every request, so a round's time holds all its work):
  mlp          8 x (Linear 512x512 + ReLU), batch 32: 16 short kernels per
               step, so the step is bound by launching, the hook's worst case
  transformer  4 TransformerEncoderLayer (d_model 256, 4 heads, 1024
               feed-forward), batch 8 x 64 tokens
Both are built and warmed up (kernels chosen, caching allocator filled)
before READY; each request then runs WARM untimed steps and N timed ones.

  infer_bench.py count STEPS   (with tests/gpu/cucount.so preloaded first)
prints, for each model, the driver entry points one step calls and how
often, and which of them reach a wrapper of libvram.so.
"""
import ctypes
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead_pairs import serve  # noqa: E402


def loop(model, x):
    def run(n):
        with torch.inference_mode():
            for _ in range(n):
                model(x)
        torch.cuda.synchronize()
    return run


def count(jobs, steps):
    """Calls per step of each entry point, through cucount.so's stubs."""
    try:
        lib = ctypes.CDLL(None)
        reset, dump = lib.cucount_reset, lib.cucount_dump
    except AttributeError:
        sys.exit("count: tests/gpu/cucount.so is not preloaded")
    dump.argtypes = [ctypes.c_char_p]
    for name, run in jobs.items():
        reset()
        run(steps)  # ends with torch.cuda.synchronize(), counted once in all
        with tempfile.NamedTemporaryFile("r", suffix=".cucount") as f:
            if dump(f.name.encode()) != 0:
                sys.exit(f"count: cannot write {f.name}")
            rows = [line.rstrip("\n").split("\t") for line in f]
        rows.sort(key=lambda r: -int(r[0]))
        total = sum(int(r[0]) for r in rows)
        hooked = sum(int(r[0]) for r in rows if r[2].startswith("libvram"))
        print(f"COUNT {name}: {total / steps:.1f} driver calls per step, {hooked / steps:.1f} of them "
              f"through libvram.so ({steps} steps)")
        for calls, entry, owner, symbol in rows:
            print(f"COUNT {name}: {int(calls) / steps:10.2f}  {entry:32} {owner:16} {symbol}")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the process is pinned to one core
    dev = torch.device("cuda")
    mlp = torch.nn.Sequential(*[m for _ in range(8) for m in (torch.nn.Linear(512, 512), torch.nn.ReLU())])
    layer = torch.nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=4)
    jobs = {
        "mlp": loop(mlp.to(dev).eval(), torch.randn(32, 512, device=dev)),
        "transformer": loop(encoder.to(dev).eval(), torch.randn(8, 64, 256, device=dev)),
    }
    for run in jobs.values():
        run(200)
    if sys.argv[1:2] == ["count"]:
        count(jobs, int(sys.argv[2]) if len(sys.argv) > 2 else 100)
        return
    serve(jobs, info=f"torch={torch.__version__} gpu={torch.cuda.get_device_name().replace(' ', '_')}")


if __name__ == "__main__":
    main()
