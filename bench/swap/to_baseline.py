# SPDX-License-Identifier: MIT
"""The hand-made swap the TTS apps do, for comparison with vramd's: the
8B-shaped model of tests/gpu/tf_server.py loaded onto the GPU, then
model.to('cpu') and model.to('cuda'), each timed with a synchronize, and
what stays on the GPU while the model is on the CPU.
    to_baseline.py --cache DIR [--size 8b] -> one JSON line"""
import argparse
import json
import os
import time

import torch
from transformers import LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--cache", required=True)
p.add_argument("--size", default="8b")
a = p.parse_args()
m = LlamaForCausalLM.from_pretrained(os.path.join(a.cache, f"llama-{a.size}"), torch_dtype=torch.bfloat16,
                                     device_map="cuda:0").eval()
ids = torch.tensor([[128000, 791, 6864, 315, 9822, 374]], device="cuda:0")
with torch.inference_mode():
    ref = m.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)[0].tolist()
torch.cuda.synchronize()
t = time.monotonic()
m.to("cpu")
torch.cuda.synchronize()
out_s = time.monotonic() - t
left = torch.cuda.memory_reserved(0)
t = time.monotonic()
m.to("cuda")
torch.cuda.synchronize()
in_s = time.monotonic() - t
with torch.inference_mode():
    t = time.monotonic()
    got = m.generate(ids, max_new_tokens=16, min_new_tokens=16, do_sample=False)[0].tolist()
    torch.cuda.synchronize()
    first = time.monotonic() - t
print(json.dumps({"out_s": round(out_s, 3), "in_s": round(in_s, 3), "reserved_while_on_cpu": left,
                  "first_request_s": round(first, 3), "same_tokens": got == ref}))
