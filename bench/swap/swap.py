# SPDX-License-Identifier: MIT
"""The two-model alternation of bench/swap/run.sh, against a running vramd.

Two transformers servers (tests/gpu/tf_server.py: "big", 8B-shaped, and
"small", 4B-shaped) share a GPU whose budget holds one of them. Requests
through the gateway alternate between them; each one swaps: the model on
the GPU is offloaded (the victim) and the asked one restored (the target).
For each swap, from vramd's log and the client's clock: the victim's
offload and the target's restore with their overlap, request to ready,
ready to first byte, the first-request penalty (the server's own generate
time against its warm one), and request to answer against warm. Then each
transfer alone, and the first offload of each process (made with or without
its host buffers beforehand, as the log says).

    swap.py URL VRAMCTL SOCKET VRAMD_LOG OUT.json [--swaps N]
"""
import argparse
import datetime
import json
import re
import subprocess
import time
import urllib.request

p = argparse.ArgumentParser()
p.add_argument("url")
p.add_argument("vramctl")
p.add_argument("sock")
p.add_argument("log")
p.add_argument("out")
p.add_argument("--swaps", type=int, default=8)
p.add_argument("--logs", help="the workloads' log directory: the hooks' own durations of each move")
args = p.parse_args()
PROMPT = [128000, 791, 6864, 315, 9822, 374]


def gen(name):
    """One 16-token greedy request through the gateway: wall times and the server's answer."""
    body = json.dumps({"prompt": PROMPT, "max_new_tokens": 16}).encode()
    req = urllib.request.Request(f"{args.url}/w/{name}/generate", data=body,
                                 headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=600) as r:
        first = r.read(1)
        t1 = time.time()
        rest = r.read()
    t2 = time.time()
    ans = json.loads(first + rest)
    return {"sent": t0, "first_byte": t1, "done": t2, "server_s": ans["seconds"], "tokens": ans["tokens"]}


def ctl(*a):
    t0 = time.time()
    r = subprocess.run([args.vramctl, "--url", args.sock, *a], capture_output=True, text=True)
    return {"sent": t0, "done": time.time(), "rc": r.returncode, "out": (r.stdout + r.stderr).strip()}


LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \w+\s+(\w+): (\w+) -> (\w+)")


def transitions():
    """(epoch seconds, workload, from, to) of every state change in vramd's log."""
    out = []
    for line in open(args.log, errors="replace"):
        m = LINE.match(line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            out.append((t, m.group(2), m.group(3), m.group(4)))
    return out


HOOK = re.compile(r"(offloaded|restored) (\d+) bytes in ([\d.]+) s")


def hook_moves(name):
    """The durations the hook logged for name's offloads and restores, in order."""
    out = {"offloaded": [], "restored": []}
    if args.logs:
        try:
            for line in open(f"{args.logs}/{name}.log", errors="replace"):
                m = HOOK.search(line)
                if m and "Failed" not in line:
                    out[m.group(1)].append(float(m.group(3)))
        except OSError:
            pass
    return out


def exact(trs, name, kind, end):
    """The interval of name's move that ended at end, from the hook's own duration:
    vramd's state can turn restoring long before the copy begins (waiting for room)."""
    ends = [t for t, w, a, b in trs if w == name and
            ((kind == "restored" and a == "restoring" and b == "ready") or
             (kind == "offloaded" and a == "offloading" and b == "offloaded"))]
    moves = hook_moves(name)[kind]
    if end in ends and len(moves) == len(ends):
        return end - moves[ends.index(end)], end
    return None


def span(trs, name, frm, to, after, before):
    """The first name: frm -> ... -> to interval that begins in [after, before]."""
    start = None
    for t, w, a, b in trs:
        if w != name or t < after - 0.01 or t > before + 0.01:
            continue
        if a == frm[0] and b == frm[1] and start is None:
            start = t
        elif start is not None and a == to[0] and b == to[1]:
            return start, t
    return None


def other(n):
    return "small" if n == "big" else "big"


res = {"warm": {}, "swaps": [], "alone": {}}
# warm references: a second request in a row on each model, the first having made it warm
for n in ("big", "small"):
    gen(n)
    w = gen(n)
    w2 = gen(n)
    res["warm"][n] = {"total": min(w["done"] - w["sent"], w2["done"] - w2["sent"]),
                      "server_s": min(w["server_s"], w2["server_s"]), "tokens": w["tokens"]}
name = "big"
for i in range(args.swaps):
    r = gen(name)
    r.update(target=name, victim=other(name), index=i)
    res["swaps"].append(r)
    name = other(name)
    time.sleep(0.5)
# each transfer alone: the other model offloaded first, so nothing waits for room
for n in ("big", "small"):
    ctl("offload", other(n))
    ctl("restore", n)
    gen(n)
    res["alone"][n] = {"offload": ctl("offload", n), "restore": ctl("restore", n)}
time.sleep(0.5)
trs = transitions()
for s in res["swaps"]:
    off = span(trs, s["victim"], ("ready", "offloading"), ("offloading", "offloaded"), s["sent"], s["first_byte"])
    rst = span(trs, s["target"], ("offloaded", "restoring"), ("restoring", "ready"), s["sent"], s["first_byte"])
    off = (exact(trs, s["victim"], "offloaded", off[1]) or off) if off else None
    rst = (exact(trs, s["target"], "restored", rst[1]) or rst) if rst else None
    s["offload"], s["restore"] = off, rst
    if off and rst:
        s["overlap_s"] = max(0.0, min(off[1], rst[1]) - max(off[0], rst[0]))
        s["request_to_ready"] = rst[1] - s["sent"]
        s["ready_to_first_byte"] = s["first_byte"] - rst[1]
    w = res["warm"][s["target"]]
    s["total"] = s["done"] - s["sent"]
    s["over_warm"] = s["total"] - w["total"]
    s["penalty_s"] = s["server_s"] - w["server_s"]
    s["same_tokens"] = s["tokens"] == w["tokens"]
for n, a in res["alone"].items():
    for k in ("offload", "restore"):
        frm, to = ((("ready", "offloading"), ("offloading", "offloaded")) if k == "offload"
                   else (("offloaded", "restoring"), ("restoring", "ready")))
        sp = span(trs, n, frm, to, a[k]["sent"], a[k]["done"])
        if sp:
            sp = exact(trs, n, "offloaded" if k == "offload" else "restored", sp[1]) or sp
        a[k]["seconds"] = sp[1] - sp[0] if sp else None
json.dump(res, open(args.out, "w"), indent=1)
