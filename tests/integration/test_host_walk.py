# SPDX-License-Identifier: MIT
"""The host budget under a random walk, through the real vramd on the fake
CUDA driver: 8 hooked fc-servers of random sizes share a host budget that
holds only some of their copies; 1,000 random offloads, restores and parks
(and requests of the host policy that make room on their own: drops of
kept buffers, parks, refusals with numbers) never take the host memory held
past the budget, and after every step the ledger equals what the hooks
report. At the end every server's memory holds its pattern.

VRAM_TEST_WALK_STEPS changes the number of steps (default 1000).
"""
import os
import random

import requests

from conftest import wait_for
from test_hook import ASAN_OPTIONS, ASAN_RT, FAKECUDA, SERVER

MIB = 1 << 20
STEPS = int(os.environ.get("VRAM_TEST_WALK_STEPS", "1000"))
N = 8
BUDGET = 96 * MIB

WORKLOAD = """
  w@i@:
    cmd: [@server@]
    gpus: 1
    memory: 128MiB
    health: /health
    offload: hook
    env:
      LD_LIBRARY_PATH: @fakecuda@
      VRAM_HOOK_CONTEXT_MEMORY: 16MiB
      VRAM_FAKE_CONTEXT_MEMORY: 16MiB
      VRAM_HOOK_PARK_PIECE: 2MiB
      FC_SERVER_MIB: "@mib@"
      FC_SERVER_PIECES: "@pieces@"
      ASAN_OPTIONS: "@asan@"
      LD_PRELOAD: "@asan_rt@"
"""


def config(sizes):
    text = f"""
daemon:
  log_level: info
gpus:
  reserve: 0
host:
  reserve: 0
  limit: {BUDGET // MIB}MiB
  premake_buffers: false
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:"""
    for i, (mib, pieces) in enumerate(sizes):
        text += (WORKLOAD.replace("@i@", str(i)).replace("@server@", SERVER).replace("@fakecuda@", FAKECUDA)
                 .replace("@mib@", str(mib)).replace("@pieces@", str(pieces)).replace("@asan@", ASAN_OPTIONS)
                 .replace("@asan_rt@", ASAN_RT))
    return text


def hook_host(st, name):
    """What the hooks of a workload report: pinned (held) and kept host bytes."""
    w = [x for x in st["workloads"] if x["name"] == name][0]
    procs = (w.get("hook") or {}).get("processes") or []
    return (sum(p.get("host_pinned_bytes") or 0 for p in procs), sum(p.get("host_kept_bytes") or 0 for p in procs))


def test_host_budget_holds_over_a_random_walk(daemon):
    rng = random.Random(20261207)
    sizes = [(rng.choice([8, 12, 16, 24, 32]), rng.choice([1, 2, 4])) for _ in range(N)]
    d = daemon(config(sizes), gpus="1x4GiB")
    names = [f"w{i}" for i in range(N)]
    for n in names:
        d.ctl("start", n, check=0)
    # every hook has reported its data before the walk
    wait_for(lambda: all(d.workload(n)["hook"]["measured_bytes"] >= (16 + sizes[i][0]) * MIB
                         for i, n in enumerate(names)), what="every hook's usage")
    counts = {}
    for step in range(STEPS):
        n = rng.choice(names)
        act = rng.choice(["offload", "offload", "restore", "restore", "park"])
        r = d.post(f"/api/workloads/{n}/{act}", timeout=60)
        outcome = "ok" if r.status_code == 200 else f"{r.status_code}"
        counts[(act, outcome)] = counts.get((act, outcome), 0) + 1
        if r.status_code not in (200, 409):
            # a refusal says why, with the numbers when it is the host budget's
            body = r.json()
            msg = body.get("error", {}).get("message", "") if isinstance(body.get("error"), dict) else str(body)
            assert r.status_code in (400, 507, 503), (step, act, n, r.status_code, r.text)
            if "host memory" in msg:
                assert "budget" in msg, msg
        st = d.status()
        host = st["host"]
        held = host["parked"] + host["kept"]
        assert held <= host["budget"], (step, act, n, host)
        # the ledger is the hooks' reports, workload by workload
        for m in names:
            w = [x for x in st["workloads"] if x["name"] == m][0]
            pinned, _kept = hook_host(st, m)
            assert w["memory"]["host_bytes"] == pinned, (step, m, w["memory"], pinned)
        assert sum(hook_host(st, m)[0] for m in names) == held, (step, host)
    print(sorted(counts.items()))
    # some of each happened, and the budget forced the policy's hand
    assert counts.get(("park", "ok"), 0) > 0 and counts.get(("offload", "ok"), 0) > 0
    steps = [l for l in d.log_text().splitlines() if "of host memory for" in l]
    assert steps, "the budget never made the policy act"
    print(len(steps), "steps of the host policy, e.g.", steps[0])
    for i, n in enumerate(names):
        d.post(f"/api/workloads/{n}/restore", timeout=60)
        assert d.state(n) == "ready", d.workload(n)
        port = d.workload(n)["port"]
        mib = sizes[i][0] - sizes[i][0] % sizes[i][1]
        assert requests.get(f"http://127.0.0.1:{port}/check", timeout=30).text == f"ok {mib * MIB}"
