#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""GPU check of the checkpoint engine's driver calls.

  ckpt_check.py worker --gib N [--busy]
      A torch process that fills N GiB of GPU memory with random data, keeps
      per-chunk checksums, and answers commands on stdin:
        check    -> "check ok|bad device=<uuid>"
        compute  -> "compute ok <value>"
        quit
      With --busy a thread launches matmuls without pause (the lock must
      wait for the work to drain).

  ckpt_check.py run --tool PATH --gib N [--move] [--busy]
      Starts a worker, offloads and restores it with the tool (vram-ckpt),
      checks GPU memory is freed and the checksums after the restore, and
      with --move restores onto the other GPU (2-GPU machine). Prints one
      line "RESULT {json}".
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

CHUNK = 256 << 20  # bytes per checksummed chunk


def worker(args):
    import torch

    dev = torch.device("cuda", 0)
    n_chunks = max(1, (args.gib << 30) // CHUNK)
    g = torch.Generator(device=dev)
    g.manual_seed(1234)
    chunks = [torch.randint(-2**31, 2**31 - 1, (CHUNK // 4,), dtype=torch.int32, device=dev, generator=g)
              for _ in range(n_chunks)]

    def sums():
        return [int(c.to(torch.int64).sum().item()) ^ int((c[::4097].to(torch.int64) * 31).sum().item())
                for c in chunks]

    ref = sums()
    torch.cuda.synchronize()
    stop = threading.Event()
    if args.busy:
        a = torch.randn(4096, 4096, device=dev)

        def spin():
            while not stop.is_set():
                for _ in range(20):
                    torch.mm(a, a)
                torch.cuda.synchronize()

        threading.Thread(target=spin, daemon=True).start()

    def uuid():
        try:
            return str(torch.cuda.get_device_properties(0).uuid)
        except Exception:  # older torch
            return "?"

    print(f"ready pid={os.getpid()} bytes={n_chunks * CHUNK} device={uuid()}", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            ok = sums() == ref
            print(f"check {'ok' if ok else 'bad'} device={uuid()}", flush=True)
        elif cmd == "compute":
            x = torch.randn(2048, 2048, device=dev)
            v = float((x @ x).abs().sum().item())
            print(f"compute ok {v:.3e}", flush=True)
        elif cmd == "quit":
            break
    stop.set()


def gpu_mem_of(pid):
    """MiB per GPU index that pid holds, from nvidia-smi."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_uuid,used_memory",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
    uuids = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                           capture_output=True, text=True).stdout
    index = {u.strip(): int(i) for i, u in (l.split(",") for l in uuids.strip().splitlines())}
    held = {}
    for line in out.strip().splitlines():
        parts = [s.strip() for s in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) != pid:
            continue
        mib = int(parts[2]) if parts[2].isdigit() else 0
        held[index.get(parts[1], -1)] = held.get(index.get(parts[1], -1), 0) + mib
    return held


def tool(path, *args):
    r = subprocess.run([path, *map(str, args)], capture_output=True, text=True)
    line = (r.stdout.strip().splitlines() or [r.stderr.strip()])[-1]
    fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv and not kv.startswith("errno"))
    return r.returncode == 0, line, fields


def run(args):
    env = dict(os.environ)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if args.move:
        # Both GPUs visible: device 0 is GPU 0 until the restore swaps it with GPU 1.
        env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, os.path.abspath(__file__), "worker", "--gib", str(args.gib)]
    if args.busy:
        cmd.append("--busy")
    w = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    res = {"gib": args.gib, "move": args.move, "busy": args.busy, "ok": False}

    def ask(c):
        w.stdin.write(c + "\n")
        w.stdin.flush()
        return w.stdout.readline().strip()

    try:
        ready = w.stdout.readline().strip()
        if not ready.startswith("ready"):
            res["error"] = f"worker did not start: {ready}"
            return res
        pid = w.pid
        nbytes = int(ready.split("bytes=")[1].split()[0])
        res["bytes"] = nbytes
        before = gpu_mem_of(pid)
        res["gpu_mib_before"] = before

        ok, line, f = tool(args.tool, "offload", pid, 60000)
        res["offload_line"] = line
        if not ok:
            res["error"] = line
            return res
        secs = float(f["seconds"])
        res["offload_s"] = secs
        res["offload_lock_s"] = float(f.get("lock_seconds", 0))
        res["offload_gbps"] = nbytes / secs / 1e9
        time.sleep(0.5)
        during = gpu_mem_of(pid)
        res["gpu_mib_offloaded"] = during
        res["freed"] = sum(during.values()) == 0
        ok, line, _ = tool(args.tool, "state", pid)
        res["state_offloaded"] = line

        moves = ["0:1"] if args.move else []
        ok, line, f = tool(args.tool, "restore", pid, *moves)
        res["restore_line"] = line
        if not ok:
            res["error"] = line
            if args.move:  # recover: back in place
                tool(args.tool, "restore", pid)
            return res
        secs = float(f["seconds"])
        res["restore_s"] = secs
        res["restore_gbps"] = nbytes / secs / 1e9
        after = gpu_mem_of(pid)
        res["gpu_mib_after"] = after
        chk = ask("check")
        res["check"] = chk
        res["compute"] = ask("compute")
        moved_ok = True
        if args.move:
            moved_ok = list(after.keys()) == [1] and list(before.keys()) == [0]
            res["moved_to_gpu1"] = moved_ok
        res["ok"] = (res["freed"] and chk.startswith("check ok") and res["compute"].startswith("compute ok")
                     and moved_ok)
        return res
    finally:
        try:
            ask("quit")
        except Exception:
            pass
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("worker")
    a.add_argument("--gib", type=int, default=4)
    a.add_argument("--busy", action="store_true")
    b = sub.add_parser("run")
    b.add_argument("--tool", required=True)
    b.add_argument("--gib", type=int, default=4)
    b.add_argument("--move", action="store_true")
    b.add_argument("--busy", action="store_true")
    args = ap.parse_args()
    if args.mode == "worker":
        worker(args)
    else:
        print("RESULT " + json.dumps(run(args)), flush=True)


if __name__ == "__main__":
    main()
