# SPDX-License-Identifier: MIT
"""Is a model server's first request on a new thread slower, and by what?
Loads the tf_server.py weights (--size, --cache) and times greedy 16-token
requests: three on the main thread, then two on each of three new threads.
Prints one line per request: thread, total seconds, prefill, mean decode
step. Run it with and without LD_PRELOAD=libvram.so to tell the hook from
the framework."""
import argparse
import os
import threading
import time

import torch
from transformers import LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--size", default="1b")
p.add_argument("--cache", required=True)
p.add_argument("--label", default="")
args = p.parse_args()
model = LlamaForCausalLM.from_pretrained(os.path.join(args.cache, f"llama-{args.size}"),
                                         torch_dtype=torch.bfloat16, device_map="cuda:0").eval()


class Steps:
    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.monotonic())

    def end(self):
        pass


def one(tag):
    with torch.inference_mode():
        t = time.monotonic()
        ids = torch.tensor([[128000, 791, 6864, 315, 9822, 374]], device="cuda:0")
        s = Steps()
        model.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, streamer=s)
        torch.cuda.synchronize()
        m = [x - t for x in s.times]
        print(f"{args.label} {tag:12s} total {time.monotonic() - t:.3f} prefill {m[1]:.3f} "
              f"step {(m[-1] - m[1]) / (len(m) - 2):.4f}", flush=True)


for i in range(3):
    one("main")
for k in range(3):
    th = threading.Thread(target=lambda: (one(f"thread{k}"), one(f"thread{k}-2")))
    th.start()
    th.join()
