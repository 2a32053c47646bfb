# SPDX-License-Identifier: MIT
"""GPU checks of libvram.so with PyTorch (run through tests/gpu/run-hook.sh).

Modes:
  correctness  tensors, a small model and (optionally) a captured CUDA graph
               give identical results before and after N offload/restore
               cycles driven through the VRAM_CONTROL socket of this process
  cap          with VRAM_MEMORY_LIMIT set, torch reports the cap and runs out
               of memory near it
  bench        holds SIZE GiB of random data; measures first offload, then
               --warm-rounds warm offloads and restores (median, min, max,
               and where the time went: the hook's phase timings), the GPU
               memory left while offloaded against what the context held
               before the data, next to torch .to('cpu')/.to('cuda')
  overhead     times tiny kernel launches from Python (--launches, 0 to skip)
               and an inference loop (median of 10 rounds, scaled to --infer)
Every mode prints one line 'RESULT key=value ...' for the summary table;
bench also prints one 'PHASES ...' line per offload and restore.
"""
import argparse
import os
import re
import socket
import sys
import time

import torch


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
    fields = {}
    for tok in line.split(" text=")[0].split()[2:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            fields[k] = v
    fields["ok"] = line.startswith("ok ")
    fields["line"] = line
    # "[ms: drain=0.0 sync=1.2 copy=390.1 ...]" in the text: where the time went
    m = re.search(r"\[ms: ([^\]]*)\]", line)
    fields["phases"] = {k: float(v) for k, v in (kv.split("=", 1) for kv in m.group(1).split())} if m else {}
    return fields


def checksum(t):
    return int(t.view(torch.int32).to(torch.int64).sum().item()) if t.dtype == torch.float32 else int(
        t.to(torch.int64).sum().item())


def correctness(args):
    torch.manual_seed(0)
    dev = "cuda"
    tensors = [torch.randn(1 << 20, device=dev) for _ in range(16)]
    tensors += [torch.randint(0, 1 << 30, (4 << 20,), device=dev, dtype=torch.int32)]
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.GELU(), torch.nn.Linear(4096, 1024)).to(dev)
    x = torch.randn(64, 1024, device=dev)
    with torch.no_grad():
        ref_out = model(x).clone()
    ref_sums = [checksum(t) for t in tensors]

    graph = None
    if args.graph:
        static_x = x.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = model(static_x)
        graph.replay()
        torch.cuda.synchronize()
        graph_ref = static_out.clone()

    torch.cuda.synchronize()
    free_before = torch.cuda.mem_get_info()[0]
    moved = []
    for i in range(args.cycles):
        r = ctl("offload")
        assert r["ok"], r["line"]
        moved.append(int(r["bytes"]))
        r = ctl("restore")
        assert r["ok"], r["line"]
        sums = [checksum(t) for t in tensors]
        assert sums == ref_sums, f"cycle {i}: tensor checksums differ"
        with torch.no_grad():
            out = model(x)
        assert torch.equal(out, ref_out), f"cycle {i}: model output differs"
        if graph is not None:
            static_out.zero_()
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(static_out, graph_ref), f"cycle {i}: graph replay differs"
    free_after = torch.cuda.mem_get_info()[0]
    print(f"RESULT mode=correctness alloc={os.environ.get('PYTORCH_CUDA_ALLOC_CONF', 'default')} "
          f"graph={bool(graph)} cycles={args.cycles} moved_bytes={moved[-1] if moved else 0} "
          f"free_before={free_before} free_after={free_after} ok=1")


def cap(args):
    limit = args.cap_gib * (1 << 30)
    free, total = torch.cuda.mem_get_info()
    assert abs(total - limit) < (1 << 20), f"total {total} != cap {limit}"
    blocks, n = [], 0
    try:
        while True:
            blocks.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
            n += 1
    except torch.OutOfMemoryError:
        pass
    got = n * (256 << 20)
    assert limit - (2 << 30) < got <= limit, f"allocated {got} bytes under a {limit} cap"
    print(f"RESULT mode=cap cap={limit} reported_total={total} reported_free={free} allocated_before_oom={got} ok=1")


def device_used():
    free, total = torch.cuda.mem_get_info()
    return total - free


def phases_text(label, r):
    """One PHASES line: the total, each phase in ms, and the link rate of the copy phase."""
    b, s = int(r["bytes"]), max(int(r["usec"]), 1) / 1e6
    ph = r["phases"]
    parts = " ".join(f"{k}={v:.1f}" for k, v in ph.items())
    copy = ph.get("copy", 0.0)
    link = f" copy_GBps={b / (copy / 1e3) / 1e9:.1f}" if copy > 0 else ""
    return f"PHASES {label} bytes={b} total_ms={s * 1e3:.1f} GBps={b / s / 1e9:.1f} {parts}{link}"


def bench(args):
    n = args.size_gib
    # What the context and the kernels take before any data: the floor of
    # what an offload can leave on the device.
    warm = torch.randint(0, 100, (1 << 18,), dtype=torch.int32, device="cuda")
    int(warm.to(torch.int64).sum().item())
    del warm
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    used_at_start = device_used()
    chunks = [torch.randint(-2**31, 2**31 - 1, (256 << 18,), dtype=torch.int32, device="cuda") for _ in range(n * 4)]
    torch.cuda.synchronize()
    total = sum(c.numel() * 4 for c in chunks)
    sums = [int(c.to(torch.int64).sum().item()) for c in chunks[:4]]
    res, rounds = {}, {"warm_offload": [], "restore": []}
    steps = [("first_offload", "offload"), ("restore1", "restore")]
    steps += [(label, cmd) for _ in range(args.warm_rounds)
              for label, cmd in (("warm_offload", "offload"), ("restore", "restore"))]
    for i, (label, cmd) in enumerate(steps):
        r = ctl(cmd)
        assert r["ok"], r["line"]
        if label == "warm_offload":
            r["used_after"] = device_used()
        print(phases_text(label if label not in rounds else f"{label}#{len(rounds[label]) + 1}", r), flush=True)
        if label in rounds:
            rounds[label].append(r)
        else:
            res[label] = r
    assert [int(c.to(torch.int64).sum().item()) for c in chunks[:4]] == sums
    t = time.perf_counter()
    host = [c.to("cpu") for c in chunks]
    torch.cuda.synchronize()
    to_cpu = time.perf_counter() - t
    del chunks
    torch.cuda.empty_cache()
    t = time.perf_counter()
    back = [h.to("cuda") for h in host]
    torch.cuda.synchronize()
    to_cuda = time.perf_counter() - t
    out = [f"RESULT mode=bench bytes={total}"]
    first_s = int(res["first_offload"]["usec"]) / 1e6
    out.append(f"first_offload_s={first_s:.3f} first_offload_GBps={total / first_s / 1e9:.1f}")
    for k, rs in rounds.items():
        # the median round, and the spread over the rounds
        rs = sorted(rs, key=lambda r: int(r["usec"]))
        med = rs[len(rs) // 2]
        s_med, s_min, s_max = (int(x["usec"]) / 1e6 for x in (med, rs[0], rs[-1]))
        out.append(f"{k}_s={s_med:.3f} {k}_GBps={total / s_med / 1e9:.1f} {k}_min_s={s_min:.3f} "
                   f"{k}_max_s={s_max:.3f} {k}_rounds={len(rs)}")
        out.append(f"{k}_ms=" + ",".join(f"{p}:{v:.1f}" for p, v in med["phases"].items()))
    used_after = max(r["used_after"] for r in rounds["warm_offload"])
    out.append(f"device_used_at_start={used_at_start} device_used_after_warm_offload={used_after} "
               f"left_beyond_start={used_after - used_at_start} "
               f"hook_nonmovable={rounds['warm_offload'][-1]['nonmovable']}")
    out.append(f"torch_to_cpu_s={to_cpu:.3f} torch_to_cpu_GBps={total / to_cpu / 1e9:.1f}")
    out.append(f"torch_to_cuda_s={to_cuda:.3f} torch_to_cuda_GBps={total / to_cuda / 1e9:.1f}")
    del back, host
    # The first offload's floor: pinning the same amount of host memory from
    # nothing (cudaHostAlloc faults every page in), timed in this process.
    t = time.perf_counter()
    pinned = [torch.empty(256 << 20, dtype=torch.uint8, pin_memory=True) for _ in range(n * 4)]
    pin_s = time.perf_counter() - t
    del pinned
    out.append(f"pinned_alloc_s={pin_s:.3f} pinned_alloc_GBps={total / pin_s / 1e9:.2f}")
    # Above 1: the first offload (allocation and copy) beat pinning alone.
    out.append(f"first_offload_vs_pinned_alloc={pin_s / first_s:.2f}")
    print(" ".join(out))


def overhead(args):
    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.launches):
        x.add_(1)
    torch.cuda.synchronize()
    launches = time.perf_counter() - t
    # The inference loop: warmed up, then timed in rounds whose median is
    # kept, so that one slow round (a page fault, a timer) does not decide.
    model = torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(8)]).cuda().eval()
    inp = torch.randn(32, 512, device="cuda")
    with torch.no_grad():
        for _ in range(50):
            model(inp)
        torch.cuda.synchronize()
        rounds = []
        per_round = max(1, args.infer // 10)
        for _ in range(10):
            t = time.perf_counter()
            for _ in range(per_round):
                model(inp)
            torch.cuda.synchronize()
            rounds.append(time.perf_counter() - t)
    infer = sorted(rounds)[len(rounds) // 2] * 10
    print(f"RESULT mode=overhead hook={int('libvram' in os.environ.get('LD_PRELOAD', ''))} "
          f"launches={args.launches} launch_s={launches:.3f} infer_iters={args.infer} infer_s={infer:.3f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["correctness", "cap", "bench", "overhead"])
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--graph", action="store_true")
    p.add_argument("--cap-gib", type=int, default=10)
    p.add_argument("--size-gib", type=int, default=20)
    p.add_argument("--warm-rounds", type=int, default=5)
    p.add_argument("--launches", type=int, default=1000000)
    p.add_argument("--infer", type=int, default=2000)
    args = p.parse_args()
    torch.cuda.init()
    {"correctness": correctness, "cap": cap, "bench": bench, "overhead": overhead}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
