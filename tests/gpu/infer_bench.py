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
"""
import os
import sys

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
    serve(jobs, info=f"torch={torch.__version__} gpu={torch.cuda.get_device_name().replace(' ', '_')}")


if __name__ == "__main__":
    main()
