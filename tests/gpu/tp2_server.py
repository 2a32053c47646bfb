#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A tensor-parallel-2 model server for run-tp2.sh, started by torchrun
(--nproc_per_node 2) under vramd. Rank 0 serves HTTP on $PORT:
  GET /health  -> 200 once both ranks are ready
  GET /check   -> runs STEPS steps of a TP-2 MLP (column- then row-parallel,
                  random weights from a fixed seed, an NCCL all_reduce every
                  step) on a fixed input on both ranks and answers the
                  checksum of the output; the same checksum every time means
                  the weights and the communicators survived.
The ranks wait for work on a gloo (CPU) group, so nothing spins on the GPU
between requests and an offload finds both devices idle. Each rank holds
about --gib GiB of weights.
"""
import argparse
import http.server
import os
import threading

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=4)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    cpu = dist.new_group(backend="gloo")
    world = dist.get_world_size()
    hidden = 8192
    layers = max(1, int(a.gib * (1 << 30) / (2 * hidden * hidden // world * 4)))
    g = torch.Generator(device="cuda").manual_seed(1234 + rank)
    w1 = [torch.randn(hidden, hidden // world, device="cuda", generator=g) / hidden ** 0.5 for _ in range(layers)]
    w2 = [torch.randn(hidden // world, hidden, device="cuda", generator=g) / hidden ** 0.5 for _ in range(layers)]
    x0 = torch.randn(16, hidden, device="cuda", generator=torch.Generator(device="cuda").manual_seed(7))
    dist.broadcast(x0, 0)

    def run():
        x = x0.clone()
        for _ in range(a.steps):
            for l in range(layers):
                h = torch.relu(x @ w1[l])
                y = h @ w2[l]
                dist.all_reduce(y)   # NCCL, every step
                x = torch.tanh(y)
        torch.cuda.synchronize()
        return float(x.double().sum())

    cmd = torch.zeros(1, dtype=torch.int32)
    if rank != 0:
        while True:
            dist.broadcast(cmd, 0, group=cpu)
            if cmd.item() == 0:
                break
            run()
        dist.destroy_process_group()
        return

    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/health":
                body = b"ok"
            elif self.path == "/check":
                with lock:
                    cmd.fill_(1)
                    dist.broadcast(cmd, 0, group=cpu)
                    body = ("%.9e" % run()).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()


if __name__ == "__main__":
    main()
