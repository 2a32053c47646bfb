# SPDX-License-Identifier: MIT
"""A tiny model-server stand-in for the GPU checks of vramd: holds GIB GiB of
random data on its GPU with a checksum per chunk and answers
  GET /health          200 once the data is on the GPU
  GET /check           recomputes the checksums and runs a matmul: {"ok", "device", ...}
  GET /alloc?gib=X     tries to allocate X GiB more (for MPS caps): {"ok", "error"}
With --chatty S it also prints a numbered line to stdout every S seconds, as a
server that logs would (for the check that it outlives vramd).
Usage: gpu_holder.py --port PORT --gib N [--chatty S]"""
import argparse
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

CHUNK = 256 << 20  # bytes

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--gib", type=float, default=1.0)
p.add_argument("--chatty", type=float, default=0.0)
args = p.parse_args()

lock = threading.Lock()
dev = torch.device("cuda:0")
chunks, sums = [], []
ready = False


def checksum(t):
    # int32 data seen as int64 words: a wrapping sum is exact in any order
    return int(t.view(torch.int64).sum().item())


def load():
    global ready
    left = int(args.gib * (1 << 30))
    while left > 0:
        n = min(CHUNK, left) // 8 * 2  # int32 elements, an even count
        t = torch.randint(-2**31, 2**31 - 1, (n,), dtype=torch.int32, device=dev)
        chunks.append(t)
        sums.append(checksum(t))
        left -= n * 4
    torch.cuda.synchronize()
    ready = True


def check():
    with lock:
        bad = sum(1 for t, s in zip(chunks, sums) if checksum(t) != s)
        a = torch.randn(1024, 1024, device=dev)
        ok_mm = bool(torch.isfinite(a @ a).all().item())
        torch.cuda.synchronize()
    return {"ok": bad == 0 and ok_mm, "bad_chunks": bad, "chunks": len(chunks), "compute": ok_mm,
            "device": torch.cuda.get_device_name(0), "pid": os.getpid(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def alloc(gib):
    try:
        with lock:
            t = torch.empty(int(gib * (1 << 30)), dtype=torch.uint8, device=dev)
            t.fill_(1)
            torch.cuda.synchronize()
            del t
            torch.cuda.empty_cache()
        return {"ok": True}
    except RuntimeError as e:
        torch.cuda.empty_cache()
        return {"ok": False, "error": str(e).splitlines()[0][:200]}


class H(BaseHTTPRequestHandler):
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
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/health":
            self.reply(200 if ready else 503, {"ready": ready})
        elif u.path == "/check":
            self.reply(200, check())
        elif u.path == "/alloc":
            self.reply(200, alloc(float(q.get("gib", ["1"])[0])))
        else:
            self.reply(404, {"error": "not found"})


def chatter():
    n = 0
    while True:
        n += 1
        print(f"gpu_holder: line {n}", flush=True)
        time.sleep(args.chatty)


load()
if args.chatty > 0:
    threading.Thread(target=chatter, daemon=True).start()
ThreadingHTTPServer(("127.0.0.1", args.port), H).serve_forever()
