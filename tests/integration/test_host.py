# SPDX-License-Identifier: MIT
"""The host ledger as users see it, on the real vramd with the sim engine and
a host of the test's own ($VRAM_MEMINFO): /api/status's "host" object and
each workload's memory.host_bytes follow an offload and a restore, /metrics
and the TTS-style status show the same numbers, vramctl status prints one
HOST line, a reload applies host.limit at once and refuses a new park_dir,
a host whose meminfo cannot be read reports its sizes as not known (never
0), and vramctl plan --host-memory shows what the config would hold in RAM.
"""
import json
import os
import subprocess
import tempfile
import time

from conftest import VRAMCTL, VRAMD
from test_gateway import error_of, scrape

GiB = 1 << 30

# 64 GiB of RAM, 40 GiB of it available
MEMINFO = "MemTotal:       67108864 kB\nMemFree:  1000 kB\nMemAvailable:   41943040 kB\n"

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
host:
  reserve: 8GiB
  limit: 40GiB
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  chat:
    cmd: [{demo}, --port, "${PORT}", --model, chat, --memory, 20GiB, --load-time, 100ms]
    memory: 20GiB
    health: /health
  embed:
    cmd: [{demo}, --port, "${PORT}", --model, embed, --memory, 4GiB, --load-time, 100ms]
    memory: 4GiB
    health: /health
"""


def host_daemon(daemon, monkeypatch, text=CONFIG, meminfo=MEMINFO):
    d = tempfile.mkdtemp(prefix="vramd-mi-")
    path = os.path.join(d, "meminfo")
    if meminfo is not None:
        with open(path, "w") as f:
            f.write(meminfo)
    monkeypatch.setenv("VRAM_MEMINFO", path)
    return daemon(text)


def act(d, name, action):
    r = d.post(f"/api/workloads/{name}/{action}")
    assert r.status_code == 200, r.text
    return r.json()


def test_status_metrics_and_compat_follow_an_offload(daemon, monkeypatch):
    d = host_daemon(daemon, monkeypatch)
    host = d.status()["host"]
    # the smaller budget wins: 64 - 8 = 56 against the limit of 40
    assert host == {"total": 64 * GiB, "available": 40 * GiB, "reserve": 8 * GiB,
                    "limit": 40 * GiB, "budget": 40 * GiB, "parked": 0, "kept": 0,
                    "on_disk": 0, "park_dir": os.path.join(d.workdir, "state", "park")}
    act(d, "chat", "start")
    act(d, "embed", "start")
    assert d.workload("chat")["memory"]["host_bytes"] == 0

    res = act(d, "chat", "offload")
    assert res["state"] == "offloaded"
    st = d.status()
    assert st["host"]["parked"] == 20 * GiB and st["host"]["kept"] == 0
    by_name = {w["name"]: w for w in st["workloads"]}
    assert by_name["chat"]["memory"]["host_bytes"] == 20 * GiB
    assert by_name["chat"]["memory"]["host_bytes"] == by_name["chat"]["memory"]["offloaded_bytes"]
    assert by_name["embed"]["memory"]["host_bytes"] == 0

    m = scrape(d)
    assert m[("vram_host_memory_bytes", (("kind", "total"),))] == 64 * GiB
    assert m[("vram_host_memory_bytes", (("kind", "available"),))] == 40 * GiB
    assert m[("vram_host_memory_bytes", (("kind", "budget"),))] == 40 * GiB
    assert m[("vram_host_memory_bytes", (("kind", "parked"),))] == 20 * GiB
    assert m[("vram_host_memory_bytes", (("kind", "kept"),))] == 0
    assert m[("vram_host_memory_bytes", (("kind", "on_disk"),))] == 0
    assert m[("vram_workload_host_bytes", (("workload", "chat"),))] == 20 * GiB
    assert m[("vram_workload_host_bytes", (("workload", "embed"),))] == 0

    compat = d.get("/api/gpu/status").json()
    assert compat["chat"]["location"] == "CPU"
    assert compat["chat"]["host_memory"]["allocated_gb"] == 20.0
    assert compat["embed"]["host_memory"]["allocated_gb"] == 0.0
    for name in ("chat", "embed"):
        h = compat[name]["host_memory"]["host"]
        assert h == {"total_gb": 64.0, "available_gb": 40.0, "reserve_gb": 8.0, "limit_gb": 40.0,
                     "budget_gb": 40.0, "parked_gb": 20.0, "kept_gb": 0.0, "on_disk_gb": 0.0}

    c = d.ctl("status", check=0)
    host_lines = [line for line in c.stdout.splitlines() if line.startswith("HOST")]
    assert host_lines == ["HOST  [█████░░░░░] 20.0/40.0GiB budget  total 64GiB  parked 20GiB  "
                          "kept 0B  disk 0B"], c.stdout

    # back on the GPU: nothing held in host memory any more
    act(d, "chat", "restore")
    assert d.status()["host"]["parked"] == 0
    assert d.workload("chat")["memory"]["host_bytes"] == 0
    assert scrape(d)[("vram_workload_host_bytes", (("workload", "chat"),))] == 0


def test_reload_applies_the_budget_and_refuses_a_new_park_dir(daemon, monkeypatch):
    d = host_daemon(daemon, monkeypatch)
    with open(d.config_path) as f:
        text = f.read()
    with open(d.config_path, "w") as f:
        f.write(text.replace("limit: 40GiB", "limit: 30GiB"))
    r = d.post("/api/reload")
    assert r.status_code == 200, r.text
    assert d.status()["host"]["budget"] == 30 * GiB
    # no limit: 64 - 8
    with open(d.config_path, "w") as f:
        f.write(text.replace("  limit: 40GiB\n", ""))
    assert d.post("/api/reload").status_code == 200
    host = d.status()["host"]
    assert host["budget"] == 56 * GiB and host["limit"] is None
    # the park directory holds parked processes' files: only a restart moves it
    with open(d.config_path, "w") as f:
        f.write(text.replace("limit: 40GiB", "limit: 40GiB\n  park_dir: /var/tmp/vramd-park"))
    r = d.post("/api/reload")
    msg = error_of(r, 409)
    assert r.json()["error"]["code"] == "needs_restart"
    assert "host.park_dir" in msg
    assert d.status()["host"]["budget"] == 56 * GiB


def test_unreadable_meminfo_is_not_known_rather_than_zero(daemon, monkeypatch):
    d = host_daemon(daemon, monkeypatch, meminfo=None)
    host = d.status()["host"]
    assert host["total"] is None and host["available"] is None
    # without MemTotal the limit is the budget
    assert host["budget"] == 40 * GiB and host["reserve"] == 8 * GiB
    m = scrape(d)
    assert ("vram_host_memory_bytes", (("kind", "total"),)) not in m
    assert ("vram_host_memory_bytes", (("kind", "available"),)) not in m
    assert m[("vram_host_memory_bytes", (("kind", "budget"),))] == 40 * GiB
    assert d.get("/api/gpu/status").json()["chat"]["host_memory"]["host"]["total_gb"] is None
    c = d.ctl("status", check=0)
    assert "HOST  [░░░░░░░░░░] 0.0/40.0GiB budget  total ?  parked 0B" in c.stdout, c.stdout
    # and without a limit there is no budget to show
    d = host_daemon(daemon, monkeypatch, text=CONFIG.replace("  limit: 40GiB\n", ""), meminfo=None)
    assert d.status()["host"]["budget"] is None
    assert ("vram_host_memory_bytes", (("kind", "budget"),)) not in scrape(d)
    c = d.ctl("status", check=0)
    assert "HOST  no budget  total ?  parked 0B  kept 0B  disk 0B\n" in c.stdout, c.stdout


def test_check_config_shows_the_host_budget(monkeypatch, tmp_path):
    mi = tmp_path / "meminfo"
    mi.write_text(MEMINFO)
    monkeypatch.setenv("VRAM_MEMINFO", str(mi))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("host: {limit: 20GiB, park_dir: /srv/park}\n"
                   "workloads:\n  a: {cmd: [x], gpus: 0}\n")
    r = subprocess.run([VRAMD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    assert ("host: budget 20GiB of 64GiB (reserve 6.4GiB: 10 % of MemTotal, at least 4GiB; "
            "limit 20GiB); park_dir /srv/park\n") in r.stdout
    # a bad value is refused with where and what was expected
    cfg.write_text("host:\n  limit: plenty\n")
    r = subprocess.run([VRAMD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert f"{cfg}:2:10: host.limit: expected a size like 512MiB or 24GiB, got \"plenty\"" \
        in r.stderr


PLAN = """
host: { reserve: 8GiB }
workloads:
  chat: { cmd: [x], memory: 30GiB, gpus: 2 }
  embed: { cmd: [x], memory: 4GiB, replicas: 2 }
  tts: { cmd: [x], memory: 2GiB, offload: restart }
"""


def test_plan_host_memory(tmp_path):
    cfg = tmp_path / "plan.yaml"
    cfg.write_text(PLAN)
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB", "--host-memory", "64GiB"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert ("WORKLOAD  HOST WHEN OFFLOADED\nchat      60GiB\nembed     8GiB\ntts       -\n\n"
            "host 64GiB: reserve 8GiB, limit none, budget 56GiB; all offloaded at once: 68GiB, "
            "12GiB over the budget: the least recently used are parked on disk or released to "
            "make room\n") in r.stdout, r.stdout
    # the GPU plan is still there, above it
    assert r.stdout.index("OUTCOME") < r.stdout.index("HOST WHEN OFFLOADED")

    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB", "--host-memory", "128GiB",
                        "--json"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [w["workload"] for w in plan["workloads"]][:1] == ["chat"]
    assert plan["host"]["budget_bytes"] == 120 * GiB and plan["host"]["fits"] is True
    assert plan["host"]["workloads"] == [
        {"workload": "chat", "offloaded_bytes": 60 * GiB},
        {"workload": "embed", "offloaded_bytes": 8 * GiB},
        {"workload": "tts", "offloaded_bytes": 0}]

    # without --host-memory nothing about the host; a bad size is a usage error
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and "HOST WHEN OFFLOADED" not in r.stdout
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB", "--host-memory", "lots"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "--host-memory: expected a size like 64GiB, got \"lots\"" in r.stderr
    r = subprocess.run([VRAMCTL, "status", "--host-memory", "64GiB"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "--host-memory goes with plan" in r.stderr


def test_simulated_gpus_have_a_simulated_host(daemon, monkeypatch):
    # without $VRAM_MEMINFO, simulated GPUs get a simulated host: twice their memory, less
    # what the workloads hold (a demo of big simulated GPUs must not find a laptop's RAM full)
    monkeypatch.delenv("VRAM_MEMINFO", raising=False)
    d = daemon(CONFIG.replace("  limit: 40GiB\n", ""), gpus="2x80GiB")
    host = d.status()["host"]
    assert host["total"] == 320 * GiB and host["available"] == 320 * GiB, host
    act(d, "chat", "start")
    act(d, "chat", "offload")
    host = d.status()["host"]
    assert host["available"] == 300 * GiB and host["parked"] == 20 * GiB, host


POLICY_CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
host:
  reserve: 8GiB
  limit: 24GiB
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  a:
    cmd: [{demo}, --port, "${PORT}", --model, a, --memory, 20GiB, --load-time, 50ms]
    memory: 20GiB
    health: /health
  b:
    cmd: [{demo}, --port, "${PORT}", --model, b, --memory, 20GiB, --load-time, 50ms]
    memory: 20GiB
    health: /health
    priority: 9
  c:
    cmd: [{demo}, --port, "${PORT}", --model, c, --memory, 20GiB, --load-time, 50ms]
    memory: 20GiB
    health: /health
"""


def test_an_offload_makes_room_in_host_memory_or_is_refused_with_the_numbers(daemon, monkeypatch):
    monkeypatch.setenv("VRAMD_SIM_DISK_BANDWIDTH", "200GiB")  # parks of 20 GiB in 0.1 s
    d = host_daemon(daemon, monkeypatch, POLICY_CONFIG)
    for n in ("a", "b", "c"):
        act(d, n, "start")
    act(d, "a", "offload")                      # 20 of the 24 GiB budget
    assert d.status()["host"]["parked"] == 20 * GiB
    # b's copy does not fit next to a's: a (lower priority, least recently used) is parked first
    w = act(d, "b", "offload")
    assert w["state"] == "offloaded", w
    assert d.state("a") == "parked"
    host = d.status()["host"]
    assert host["parked"] == 20 * GiB and host["on_disk"] == 20 * GiB, host
    assert "host memory: park a to free 20GiB of host memory for b's offload" in d.log_text()
    # c's copy would need b's room, and b ranks above c: refused with the numbers, nothing moved
    r = d.post("/api/workloads/c/offload")
    assert r.status_code != 200, r.text
    msg = json.dumps(r.json())
    assert "needs 20GiB of host memory for c's offload: budget 24GiB, 20GiB held by" in msg, msg
    assert "b (priority 9, above 0, 20GiB)" in msg, msg
    assert [d.state(n) for n in ("a", "b", "c")] == ["parked", "offloaded", "ready"]
    assert d.status()["host"]["parked"] <= 24 * GiB


def test_the_budget_holds_through_1000_random_actions(daemon, monkeypatch):
    """8 workloads of random sizes offloaded, restored, parked, started and stopped in random
    order: after every action, what status says is held in host RAM is within the budget."""
    import random
    rnd = random.Random(1207)
    sizes = [rnd.randint(1, 12) for _ in range(8)]
    text = POLICY_CONFIG[:POLICY_CONFIG.index("workloads:")] + "workloads:\n"
    for i, g in enumerate(sizes):
        text += (f"  w{i}:\n    cmd: [{{demo}}, --port, \"${{PORT}}\", --model, w{i}, --memory, {g}GiB]\n"
                 f"    memory: {g}GiB\n    health: /health\n    priority: {rnd.choice((0, 0, 5))}\n")
    monkeypatch.setenv("VRAMD_SIM_DISK_BANDWIDTH", "1000GiB")
    monkeypatch.setenv("VRAMD_SIM_BANDWIDTH", "1000GiB")
    d = host_daemon(daemon, monkeypatch, text)
    budget = d.status()["host"]["budget"]
    assert budget == 24 * GiB
    counts = {}
    for step in range(1000):
        name = f"w{rnd.randrange(8)}"
        action = rnd.choice(("start", "offload", "offload", "restore", "park", "stop"))
        r = d.post(f"/api/workloads/{name}/{action}")
        key = (action, r.status_code)
        counts[key] = counts.get(key, 0) + 1
        host = d.status()["host"]
        held = host["parked"] + host["kept"]
        assert held <= budget, (step, name, action, host, r.text)
    # the walk did reach the budget: some offloads made room, some were refused
    log = d.log_text()
    assert "host memory: park" in log or "host memory: release" in log, counts
    assert any(a == "offload" and c == 200 for (a, c) in counts), counts
    print(counts)


def test_an_eviction_whose_copy_has_no_host_room_releases_the_victim(daemon, monkeypatch):
    text = POLICY_CONFIG.replace("limit: 24GiB", "limit: 10GiB").replace(
        "    priority: 9\n", "")
    monkeypatch.setenv("VRAM_MEMINFO", os.path.join(tempfile.mkdtemp(), "meminfo"))
    with open(os.environ["VRAM_MEMINFO"], "w") as f:
        f.write(MEMINFO)
    d = daemon(text, gpus="1x30GiB")
    act(d, "a", "start")
    # b needs a's GPU; a's 20 GiB copy cannot go to host RAM (10 GiB budget, nothing to park):
    # a is released instead of holding b up until its start times out
    t = time.monotonic()
    w = act(d, "b", "start")
    assert w["state"] == "ready" and time.monotonic() - t < 10, w
    a = d.workload("a")
    assert a["state"] == "stopped", a
    assert "released to make room on the GPU: no room in host memory for its copy" in d.log_text()
    assert d.status()["host"]["parked"] == 0
