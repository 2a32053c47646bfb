# SPDX-License-Identifier: MIT
"""Prints the swap benchmark's results (bench/swap/run.sh) against its targets.
    report.py DIR"""
import json
import os
import re
import statistics
import sys

d = sys.argv[1]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def mode(name):
    path = os.path.join(d, f"{name}.json")
    if not os.path.exists(path):
        return None
    r = json.load(open(path))
    print(f"== {name}")
    for n, w in r["warm"].items():
        print(f"  warm {n}: request {w['total']:.3f} s (server {w['server_s']:.3f} s)")
    for n, a in r["alone"].items():
        print(f"  alone {n}: offload {a['offload']['seconds']:.3f} s, restore {a['restore']['seconds']:.3f} s")
    print("  swap  target victim-offload target-restore overlap  req->ready ready->1st-byte penalty total (warm+)  tokens")
    for s in r["swaps"]:
        off = s["offload"][1] - s["offload"][0] if s.get("offload") else None
        rst = s["restore"][1] - s["restore"][0] if s.get("restore") else None
        f = lambda v: f"{v:7.3f}" if v is not None else "    n/a"
        print(f"  {s['index']:4d}  {s['target']:6s} {f(off)}        {f(rst)}        {f(s.get('overlap_s'))} "
              f"{f(s.get('request_to_ready'))}    {f(s.get('ready_to_first_byte'))}       {f(s['penalty_s'])} "
              f"{s['total']:.3f} ({s['over_warm']:+.3f}) {'same' if s['same_tokens'] else 'DIFFERENT'}")
    # the targets, over the swaps
    out = {}
    for t in ("big", "small"):
        ss = [s for s in r["swaps"] if s["target"] == t]
        if not ss:
            continue
        v = "small" if t == "big" else "big"
        bound = max(r["alone"][v]["offload"]["seconds"], r["alone"][t]["restore"]["seconds"])
        out[t] = {
            "request_to_ready": med([s.get("request_to_ready") for s in ss]),
            "bound": bound,
            "penalty_pct": 100 * med([s["penalty_s"] for s in ss]) / r["warm"][t]["server_s"],
            "over_warm": med([s["over_warm"] for s in ss]),
            "ready_to_answer_vs_warm": med([s["done"] - s["restore"][1] for s in ss if s.get("restore")])
            / r["warm"][t]["total"],
            "all_same": all(s["same_tokens"] for s in ss),
        }
        o = out[t]
        print(f"  to {t}: request->ready {o['request_to_ready']:.3f} s = {o['request_to_ready'] / bound:.2f} x the "
              f"longer transfer alone ({bound:.3f} s; target <= 1.15); first-request penalty "
              f"{o['penalty_pct']:+.1f} % of warm (target within 5 %); ready->answer {o['ready_to_answer_vs_warm']:.2f} x "
              f"warm; request->answer warm {o['over_warm']:+.3f} s (target <= +0.35 s for big); tokens "
              f"{'identical' if o['all_same'] else 'DIFFER'}")
    return out


ov = mode("overlap")
sq = mode("sequential")
if ov and sq:
    for t in ov:
        print(f"== overlap against sequential, to {t}: request->ready {ov[t]['request_to_ready']:.3f} s vs "
              f"{sq[t]['request_to_ready']:.3f} s ({sq[t]['request_to_ready'] / ov[t]['request_to_ready']:.2f}x)")
for name in ("overlap", "sequential"):
    p = os.path.join(d, f"hook-{name}.txt")
    if not os.path.exists(p):
        continue
    print(f"== first offloads ({name}), from the hooks' logs")
    for line in open(p):
        m = re.search(r"offloaded (\d+) bytes in ([\d.]+) s \(([\d.]+) GB/s\).*?(pinned \d+ new bytes[^;]*)?$",
                      line.strip())
        if m and m.group(4):
            print(f"  {int(m.group(1)) / 2**30:.1f} GiB in {m.group(2)} s ({m.group(3)} GB/s), {m.group(4)}")
        elif "ahead" in line:
            print("  " + line.strip().split("info: ")[-1])
p = os.path.join(d, "to.json")
if os.path.exists(p) and os.path.getsize(p):
    t = json.load(open(p))
    print(f"== .to() by hand, 8B: out {t['out_s']} s, in {t['in_s']} s, {t['reserved_while_on_cpu'] / 2**20:.0f} MiB "
          f"reserved on the GPU while on the CPU, first request after {t['first_request_s']} s, tokens "
          f"{'identical' if t['same_tokens'] else 'DIFFER'}")
