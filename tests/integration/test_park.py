# SPDX-License-Identifier: MIT
"""The disk tier through the real vramd: a workload parked (its GPU memory on
disk, its host RAM freed, its process alive) and brought back, through REST,
vramctl and MCP; the park_after idle timer; a gateway request that restores
a parked workload; a park refused for an engine that cannot park; a vramd
killed while a workload is parked and the next one taking it back parked; a
restore from disk that fails and the cold start that follows.

On the sim engine a park writes nothing: it takes bytes / the simulated
disk's rate (VRAMD_SIM_DISK_BANDWIDTH), and VRAMD_SIM_FAIL_RESTORE=1 makes
every restore from parked fail as a checksum mismatch would. The hook
engine's park (libvram.so writing its park file on the fake CUDA driver) is
tested at the end, once vramd's hook channel speaks protocol version 3.
"""
import os
import stat

import pytest
import requests

from conftest import DEFAULT_CONFIG, wait_for
from test_adopt import kill_all, processes_of, recorded, restart
from test_gateway import scrape
from test_hook import CONFIG as HOOK_CONFIG, check
from test_hook_reconnect import sigkill
from test_runas import mcp_call

GiB = 1 << 30
MIB = 1 << 20

# embed (4 GiB) parks or comes back from disk in half a second
DISK = "8GiB"


@pytest.fixture
def disk(monkeypatch):
    monkeypatch.setenv("VRAMD_SIM_DISK_BANDWIDTH", DISK)
    monkeypatch.delenv("VRAMD_SIM_FAIL_RESTORE", raising=False)
    return monkeypatch


def mcp(d, tool, arguments):
    """One MCP tools/call over TCP: its result object."""
    msg, headers = mcp_call(tool, arguments)
    r = requests.post(d.url + "/mcp", json=msg, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_park_and_restore_through_rest_vramctl_and_mcp(daemon, disk):
    d = daemon()
    d.ctl("start", "embed", check=0)
    pid = d.workload("embed")["pid"]

    # REST: a ready workload is offloaded, then parked, and the answer comes once it is parked
    r = d.post("/api/workloads/embed/park")
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["action"], res["state"], res["bytes"], res["engine"], res["ok"]) == \
        ("park", "parked", 4 * GiB, "sim", True), res
    assert res["seconds"] >= 0.5, res  # 4 GiB at 8 GiB/s
    w = d.workload("embed")
    assert w["pid"] == pid and w["state"] == "parked"
    assert (w["memory"]["gpu_bytes"], w["memory"]["offloaded_bytes"], w["memory"]["parked_bytes"]) == \
        (0, 0, 4 * GiB), w["memory"]
    assert sum(g["memory"]["used"] for g in d.status()["gpus"]) == 0
    assert d.get("/api/gpu/status").json()["embed"]["location"] == "disk"
    m = scrape(d)
    assert m[("vram_workload_parked_bytes", (("workload", "embed"),))] == 4 * GiB
    assert m[("vram_workload_state", (("state", "parked"), ("workload", "embed")))] == 1
    events = d.get("/api/workloads/embed/logs").text
    assert "ready -> offloading: park asked: offloaded first" in events, events
    assert "offloaded -> parking: park asked" in events and "parking -> parked" in events, events

    # a parked one is not offloaded again; parking it again is done already
    r = d.post("/api/workloads/embed/offload")
    assert r.status_code == 409 and "embed is parked" in r.json()["error"]["message"], r.text
    r = d.post("/api/workloads/embed/park")
    assert r.status_code == 200 and r.json()["message"] == "embed is already parked", r.text

    r = d.post("/api/workloads/embed/restore")
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["bytes"]) == ("ready", 4 * GiB), r.text
    w = d.workload("embed")
    assert w["pid"] == pid and w["memory"]["parked_bytes"] == 0 and w["memory"]["gpu_bytes"] == 4 * GiB

    # vramctl: park, status shows the bytes on disk, restore
    r = d.ctl("park", "embed", check=0)
    assert r.stdout.startswith("embed: parked in ") and "(4GiB) via sim" in r.stdout, r.stdout
    table = d.ctl("status", check=0).stdout
    row = [line for line in table.splitlines() if line.startswith("embed ")][0]
    assert " parked " in row and "4GiB disk" in row, table
    r = d.ctl("restore", "embed", check=0)
    assert r.stdout.startswith("embed: restored in "), r.stdout
    assert d.state("embed") == "ready" and d.workload("embed")["pid"] == pid

    # MCP: park_workload and restore_workload
    res = mcp(d, "park_workload", {"workload": "embed", "timeout": 30})
    assert res["isError"] is False, res
    assert (res["structuredContent"]["action"], res["structuredContent"]["state"]) == ("park", "parked")
    assert d.state("embed") == "parked"
    res = mcp(d, "restore_workload", {"workload": "embed"})
    assert res["isError"] is False and res["structuredContent"]["state"] == "ready", res
    assert d.workload("embed")["pid"] == pid
    # and a park of a stopped one says what is allowed
    res = mcp(d, "park_workload", {"workload": "chat"})
    assert res["isError"] is True
    assert res["content"][0]["text"] == ("chat is stopped; park is allowed when it is ready or "
                                         "offloaded (or already offloading/parking/parked)"), res


def test_park_after_fires_and_is_set_at_runtime(daemon, disk):
    d = daemon()
    d.ctl("start", "embed", check=0)
    pid = d.workload("embed")["pid"]
    r = d.put("/api/workloads/embed/idle", json={"offload_after": 0.2, "park_after": "1s"})
    assert r.status_code == 200, r.text
    assert r.json()["timeouts"]["park_after_seconds"] == 1
    d.wait_state("embed", "parked", timeout=10)
    log = d.get("/api/workloads/embed/logs").text
    assert "ready -> offloading: idle for" in log and "offloaded -> parking: idle for" in log, log
    assert d.workload("embed")["pid"] == pid
    # the field is one of the idle timers: a bad value names it
    r = d.put("/api/workloads/embed/idle", json={"park_after": "soon"})
    assert r.status_code == 400 and "park_after" in r.json()["error"]["message"], r.text
    r = d.put("/api/workloads/embed/idle", json={"parked_after": 1})
    assert r.status_code == 400, r.text
    assert '"park_after"' in r.json()["error"]["message"], r.text
    # vramctl sets it too, and turns it off
    r = d.ctl("timeout", "embed", "never", "--park", check=0)
    assert r.stdout == "embed: no park when idle\n", r.stdout
    assert d.workload("embed")["timeouts"]["park_after_seconds"] is None
    r = d.ctl("timeout", "embed", "1h", "--park", "--offload")
    assert r.returncode == 2 and "not both" in r.stderr, r.stderr


def test_park_after_in_the_config(daemon, disk):
    cfg = DEFAULT_CONFIG.replace(
        "    memory: 4GiB\n    health: /health\n",
        "    memory: 4GiB\n    health: /health\n"
        "    idle: { offload_after: 300ms, park_after: 1s, release_after: never }\n")
    d = daemon(cfg)
    assert d.workload("embed")["timeouts"]["park_after_seconds"] == 1
    d.ctl("start", "embed", check=0)
    d.wait_state("embed", "parked", timeout=10)


def test_gateway_request_restores_a_parked_workload(daemon, disk):
    d = daemon()
    d.ctl("start", "embed", check=0)
    pid = d.workload("embed")["pid"]
    d.ctl("park", "embed", check=0)
    r = d.get("/w/embed/health", timeout=30)
    assert r.status_code == 200, r.text
    w = d.workload("embed")
    assert w["state"] == "ready" and w["pid"] == pid, w
    assert w["memory"]["parked_bytes"] == 0
    # a request that comes while it parks waits for the park, then restores it
    r = d.post("/api/workloads/embed/park", params={"wait": "0"})
    assert r.status_code == 202, r.text
    wait_for(lambda: d.state("embed") in ("parking", "parked"), 5, interval=0.01,
             what="embed to begin parking")
    r = d.get("/w/embed/health", timeout=30)
    assert r.status_code == 200, r.text
    assert d.state("embed") == "ready" and d.workload("embed")["pid"] == pid


def test_park_refused_for_an_engine_that_cannot_park(daemon, disk):
    cfg = DEFAULT_CONFIG.replace("    memory: 4GiB\n    health: /health\n",
                                 "    memory: 4GiB\n    health: /health\n    offload: restart\n")
    d = daemon(cfg)
    d.ctl("start", "embed", check=0)
    before = d.workload("embed")
    r = d.post("/api/workloads/embed/park")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "wrong_state"
    assert err["message"] == (
        "embed cannot be parked: its offload engine restart stops the process, so there is no "
        "memory to put on disk; parking needs the hook engine (offload: hook) or, on simulated "
        "GPUs, the sim engine"), err
    after = d.workload("embed")
    assert (after["state"], after["pid"]) == ("ready", before["pid"])
    r = d.ctl("park", "embed")
    assert r.returncode == 1 and "cannot be parked" in r.stderr, r.stderr


def test_sigkill_while_parked_is_taken_back_parked(daemon, disk):
    d = daemon()
    d2 = None
    try:
        d.ctl("start", "embed", check=0)
        pid = d.workload("embed")["pid"]
        d.ctl("park", "embed", check=0)
        r = d.put("/api/workloads/embed/idle", json={"park_after": "2h"})
        assert r.status_code == 200, r.text

        def parked_recorded():
            w = recorded(d, "embed")
            return w if w and w["instances"][0]["state"] == "parked" and \
                "park_after_ms" in w.get("runtime", {}) else None
        w = wait_for(parked_recorded, 5, what="the state file to record embed parked")
        assert w["instances"][0]["parked_bytes"] == 4 * GiB, w
        assert w["runtime"]["park_after_ms"] == 2 * 3600 * 1000, w
        sigkill(d)
        d2 = restart(d)
        w = d2.workload("embed")
        assert (w["state"], w["pid"], w["adopted"]) == ("parked", pid, True), w
        assert w["memory"]["parked_bytes"] == 4 * GiB and w["memory"]["gpu_bytes"] == 0, w
        assert w["timeouts"]["park_after_seconds"] == 7200
        assert "1 parked" in d2.log_text()
        # and it comes back from disk under the new vramd
        d2.ctl("restore", "embed", check=0)
        w = d2.workload("embed")
        assert (w["state"], w["pid"]) == ("ready", pid)
        assert processes_of("embed", d, d2) == [pid]
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(["embed"], d, d2)


def test_failed_restore_from_disk_starts_cold(daemon, disk):
    disk.setenv("VRAMD_SIM_FAIL_RESTORE", "1")
    d = daemon()
    d.ctl("start", "embed", check=0)
    pid = d.workload("embed")["pid"]
    d.ctl("park", "embed", check=0)
    r = d.post("/api/workloads/embed/restore")
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["state"] == "failed"
    assert "embed failed to restore: restore from disk with sim failed: checksum mismatch in the " \
        "park file" in err["message"], err
    # the restart policy starts it cold: a new process, the bytes on disk forgotten
    w = wait_for(lambda: (lambda w: w if w["state"] == "ready" else None)(d.workload("embed")),
                 15, what="embed to be started again")
    assert w["pid"] != pid and w["restarts"] == 1, w
    assert w["memory"]["parked_bytes"] == 0
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 5, what="the old process to be gone")
    # restores from host RAM are not touched by the failure injection
    d.ctl("offload", "embed", check=0)
    d.ctl("restore", "embed", check=0)
    assert d.state("embed") == "ready"


# ---------------------------------------------------------------- the hook engine

def park_file(d, name, pid):
    return os.path.join(d.workdir, "state", "park", f"{name}-{pid}.park")


def hooked(d):
    d.ctl("start", "fcs", check=0)
    w = d.workload("fcs")
    wait_for(lambda: (lambda h: h and h["measured_bytes"] == 128 * MIB)(d.workload("fcs")["hook"]),
             what="fc-server's hook to register and report its usage")
    return w


def test_hook_engine_park_and_restore(daemon):
    d = daemon(HOOK_CONFIG)
    w = hooked(d)
    pid, port = w["pid"], w["port"]
    assert check(port).text == f"ok {64 * MIB}"
    r = d.ctl("park", "fcs", check=0)
    assert "64MiB" in r.stdout and "via hook" in r.stdout, r.stdout
    w = d.workload("fcs")
    assert (w["state"], w["pid"]) == ("parked", pid)
    assert (w["memory"]["offloaded_bytes"], w["memory"]["parked_bytes"]) == (0, 64 * MIB), w
    path = park_file(d, "fcs", pid)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size >= 64 * MIB, st
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    hook = d.workload("fcs")["hook"]
    procs = hook["processes"]
    assert [p["state"] for p in procs] == ["parked"], procs
    # the hook's own numbers, summed for the workload and in the host ledger: nothing in RAM
    assert (hook["host_pinned_bytes"], hook["parked_bytes"]) == (0, 64 * MIB), hook
    host = d.status()["host"]
    assert host["on_disk"] == 64 * MIB and host["parked"] == 0, host
    # back from disk through the gateway's first request, contents intact; the file is gone
    r = requests.get(f"{d.url}/w/fcs/check", timeout=60)
    assert r.status_code == 200 and r.text == f"ok {64 * MIB}", r.text
    assert d.state("fcs") == "ready" and d.workload("fcs")["pid"] == pid
    assert not os.path.exists(path)


@pytest.mark.parametrize("damage", ["byte", "truncate"])
def test_hook_engine_damaged_park_file_starts_cold(daemon, damage):
    d = daemon(HOOK_CONFIG)
    w = hooked(d)
    pid = w["pid"]
    d.ctl("park", "fcs", check=0)
    path = park_file(d, "fcs", pid)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "byte":
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0xFF]))
        else:
            f.truncate(size // 2)
    r = d.post("/api/workloads/fcs/restore")
    assert r.status_code == 500, r.text
    assert r.json()["error"]["state"] == "failed"
    w = wait_for(lambda: (lambda w: w if w["state"] == "ready" else None)(d.workload("fcs")),
                 30, what="fcs to be started again cold")
    assert w["pid"] != pid and w["restarts"] == 1, w
    assert not os.path.exists(path)
    wait_for(lambda: (lambda h: h and h["measured_bytes"] == 128 * MIB)(d.workload("fcs")["hook"]),
             what="the new process's hook")
    assert check(w["port"]).text == f"ok {64 * MIB}"
