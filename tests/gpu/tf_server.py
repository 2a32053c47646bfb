# SPDX-License-Identifier: MIT
"""A transformers model server for the GPU checks of vramd, loaded the way a
real one is: a Llama-shaped model with random weights, saved once as
safetensors under --cache (kept between runs), then loaded with
from_pretrained onto cuda:0 in bfloat16.

  GET  /health    200 once the model is on the GPU, 503 before
  POST /generate  {"prompt": [token ids], "max_new_tokens": 16}
                  -> {"tokens": [...], "seconds": s}: greedy decoding, so
                  the same prompt gives the same tokens as long as the
                  weights are intact
  GET  /info      parameters, bytes on the GPU, load seconds
  POST /probe     {"what": "touch"|"matmul"|"forward"} -> {"seconds": s}:
                  one pass over every weight (a sum per tensor), one matmul
                  of the largest weight, or one forward pass, timed with a
                  device synchronize: where a first request's time goes

Sizes: 8b (Llama-3-8B shape, about 16 GB in bf16), 4b (about 7 GB), 1b.
Usage: tf_server.py --port P --size 8b --cache DIR
"""
import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8),
    "4b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
               num_attention_heads=24, num_key_value_heads=8),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8),
}

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, default=0)
p.add_argument("--size", choices=sorted(SHAPES), default="1b")
p.add_argument("--cache", required=True)
p.add_argument("--prepare", action="store_true", help="only write the weights, then exit")
args = p.parse_args()

lock = threading.Lock()
state = {"ready": False, "load_seconds": None, "params": 0}
model = None


def weights_dir():
    d = os.path.join(args.cache, f"llama-{args.size}")
    if os.path.exists(os.path.join(d, "config.json")):
        return d
    cfg = LlamaConfig(vocab_size=128256, max_position_embeddings=4096, torch_dtype="bfloat16",
                      **SHAPES[args.size])
    torch.manual_seed(1234)
    with torch.device("cuda:0"):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = d + ".tmp"
    m.save_pretrained(tmp, safe_serialization=True)
    del m
    torch.cuda.empty_cache()
    os.rename(tmp, d)
    return d


def load():
    global model
    d = weights_dir()
    t = time.monotonic()
    model = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16, device_map="cuda:0")
    model.eval()
    with torch.inference_mode():  # the first generation's one-time work, as a server warms up
        model.generate(torch.tensor([[1, 2, 3]], device="cuda:0"), max_new_tokens=2,
                       do_sample=False)
    torch.cuda.synchronize()
    state["load_seconds"] = round(time.monotonic() - t, 3)
    state["params"] = sum(x.numel() for x in model.parameters())
    state["ready"] = True


class Steps:
    """A streamer that notes when each step's tokens come out of generate."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.monotonic())

    def end(self):
        pass


def generate(prompt, n):
    with lock, torch.inference_mode():
        t = time.monotonic()
        ids = torch.tensor([prompt], device="cuda:0")
        steps = Steps()
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n, streamer=steps)
        torch.cuda.synchronize()
        # steps[0] is the prompt, steps[1] the first new token: the prefill
        marks = [round(x - t, 4) for x in steps.times]
        return {"tokens": out[0, len(prompt):].tolist(), "seconds": round(time.monotonic() - t, 4),
                "steps": marks}


def probe(what):
    with lock, torch.inference_mode():
        torch.cuda.synchronize()
        t = time.monotonic()
        if what == "touch":
            acc = torch.zeros((), device="cuda:0", dtype=torch.float32)
            for p in model.parameters():
                acc += p.float().sum() if p.numel() < (1 << 20) else p.sum(dtype=torch.float32)
        elif what == "matmul":
            w = max(model.parameters(), key=lambda x: x.numel())
            x = torch.ones((8, w.shape[-1]), device="cuda:0", dtype=w.dtype)
            (x @ w.t()).sum()
        else:
            model(torch.tensor([[1, 2, 3, 4]], device="cuda:0"))
        torch.cuda.synchronize()
        return {"seconds": round(time.monotonic() - t, 4)}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200 if state["ready"] else 503, {"ready": state["ready"]})
        elif self.path == "/info":
            self.reply(200, dict(state, gpu_bytes=torch.cuda.memory_allocated(0), pid=os.getpid()))
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"{}")
        if self.path not in ("/generate", "/probe") or not state["ready"]:
            self.reply(404 if self.path not in ("/generate", "/probe") else 503, {"error": "not ready"})
            return
        if self.path == "/probe":
            self.reply(200, probe(body.get("what", "touch")))
            return
        self.reply(200, generate(body.get("prompt", [1, 2, 3, 4]), int(body.get("max_new_tokens", 16))))


if args.prepare:
    print(weights_dir())
    raise SystemExit(0)


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # listen backlog: the default 5 drops SYNs under load
    daemon_threads = True


threading.Thread(target=load, daemon=True).start()
Server(("127.0.0.1", args.port), H).serve_forever()
