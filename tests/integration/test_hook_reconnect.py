# SPDX-License-Identifier: MIT
"""vramd killed and started again while a hooked workload runs, on the fake driver.

The workload's process is vramd's child but not tied to it: it survives a
SIGKILL of vramd with its cap still enforced by the hook, and its hook
reconnects to the next vramd on the same state directory (the same hook
socket). A vramd that has no state file to take it back from did not start
it: it lists it under its workload as external, never moves it as part of the workload, and offloads and restores
it by pid (vramctl --pid, the REST API). fc-server's GET /alloc/N asks the
process for N MiB more, so the tests see the cap from outside. fc-server
writes nothing after it starts listening; test_output_relay.py has a
workload that goes on writing with vramd gone.
"""
import os
import shutil
import signal
import time

import requests

from conftest import Daemon, free_port, pid_alive, wait_for
from test_hook import CONFIG, check

MIB = 1 << 20
CAP_MIB = 256
# 64 MiB of data and a 64 MiB context under a 256 MiB cap: 64 MiB more fits, 160 MiB does not.
RESTART_CONFIG = CONFIG.replace("memory: 1GiB", f"memory: {CAP_MIB}MiB")
assert RESTART_CONFIG != CONFIG


def alloc(port, mib):
    return requests.get(f"http://127.0.0.1:{port}/alloc/{mib}", timeout=30)


def assert_capped(port):
    r = alloc(port, 64)
    assert r.status_code == 200 and r.text == f"ok {64 * MIB}", r.text
    r = alloc(port, 160)
    assert r.status_code == 507 and r.text == "cuMemAlloc: error 2", r.text  # CUDA_ERROR_OUT_OF_MEMORY


def sigkill(d):
    """vramd dies without a word: no SIGTERM for its workloads, no cleanup."""
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    d.http.close()


def restart(d, forget=True):
    """A new vramd on the same config and state directory: the same hook and control sockets.
    forget: the state file is removed first, so that the new vramd knows nothing of the
    process (test_adopt.py has the vramd that takes it back from the state file)."""
    shutil.copy(d.log_path, d.log_path + ".killed")  # the new one writes vramd.log afresh
    if forget:
        os.unlink(os.path.join(d.workdir, "state", "state.json"))
    d2 = Daemon(d.workdir, d.config_path, free_port(), d.sock, ["--gpus", "2x80GiB"])
    d2.wait_ready()
    return d2


def hook_proc(d, pid, **want):
    """pid's entry in the workload's hook.processes once it has all of want, else None."""
    hook = d.workload("fcs")["hook"] or {"processes": []}
    for p in hook["processes"]:
        if p["pid"] == pid and all(p.get(k) == v for k, v in want.items()):
            return p
    return None


def end_survivor(pid):
    """The old workload process is nobody's child now: kill its group and wait for it to go."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_for(lambda: not pid_alive(pid), what=f"process {pid} to exit")


def started_workload(d):
    d.ctl("start", "fcs", check=0)
    w = d.workload("fcs")
    wait_for(lambda: hook_proc(d, w["pid"], connected=True, used_bytes=128 * MIB),
             what="the hook to register and report its usage")
    return w["pid"], w["port"]


def test_vramd_restart_hooked_process_reconnects_and_is_driven_by_pid(daemon):
    d = daemon(RESTART_CONFIG)
    pid, port = started_workload(d)
    assert_capped(port)

    d2 = None
    try:
        sigkill(d)
        time.sleep(0.5)
        # the workload runs on, its data intact and its cap enforced, with no vramd at all
        assert pid_alive(pid)
        assert check(port).text == f"ok {64 * MIB}"
        assert_capped(port)

        d2 = restart(d)
        ready_at = time.monotonic()
        # the hook reconnects within a few seconds, as an external process of its workload
        p = wait_for(lambda: hook_proc(d2, pid, connected=True, used_bytes=128 * MIB), timeout=5,
                     interval=0.1, what="the hook to reconnect to the new vramd")
        assert time.monotonic() - ready_at < 5
        assert p["external"] is True and p["state"] == "running"
        assert p["cap_bytes"] == CAP_MIB * MIB and p["resident_bytes"] == 128 * MIB
        w = d2.workload("fcs")
        assert w["state"] == "stopped" and w["pid"] is None   # not its instance
        assert w["hook"]["measured_bytes"] is None            # nor counted as its memory
        procs = d2.get("/api/hook/processes").json()
        assert [(x["pid"], x["workload"], x["external"]) for x in procs] == [(pid, "fcs", True)]

        # the workload is stopped for this vramd; the refusal says how to reach the process
        r = d2.ctl("offload", "fcs")
        assert r.returncode == 1 and f"vramctl offload --pid {pid}" in r.stderr, r.stderr

        # offload and restore by pid through the new vramd (the process has no VRAM_CONTROL)
        r = d2.ctl("offload", "--pid", str(pid), check=0)
        assert f"pid {pid} (fcs): offloaded {64 * MIB} bytes" in r.stdout, r.stdout
        # in status at once: the hook's answer carried the bytes it moved
        assert hook_proc(d2, pid, state="offloaded", resident_bytes=64 * MIB), d2.workload("fcs")["hook"]
        r = d2.ctl("status", "--pid", str(pid), check=0)
        assert f"pid={pid} workload=fcs state=offloaded connected=yes external=yes" in r.stdout, r.stdout
        r = d2.ctl("restore", "--pid", str(pid), check=0)
        assert "restored" in r.stdout, r.stdout
        assert check(port).text == f"ok {64 * MIB}"
        assert_capped(port)

        # the same through the REST API, with the hook's answer
        r = d2.post(f"/api/hook/processes/{pid}/offload")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["pid"], body["workload"], body["state"], body["bytes"], body["ok"]) == \
            (pid, "fcs", "offloaded", 64 * MIB, True), body
        r = d2.post(f"/api/hook/processes/{pid}/offload")  # again: refused by the hook, nothing lost
        err = r.json()["error"]
        assert r.status_code == 409 and "already offloaded" in err["message"], r.text
        assert err["state"] == "offloaded", r.text
        r = d2.post(f"/api/hook/processes/{pid}/restore")
        assert r.status_code == 200 and r.json()["bytes"] == 64 * MIB and r.json()["state"] == "running", r.text
        r = d2.post(f"/api/hook/processes/{pid}/restore")  # not offloaded: refused by the hook
        assert r.status_code == 409 and "not offloaded" in r.json()["error"]["message"], r.text
        assert check(port).text == f"ok {64 * MIB}"
        r = d2.post("/api/hook/processes/99999999/offload")
        assert r.status_code == 400, r.text
        r = d2.post(f"/api/hook/processes/{os.getpid()}/offload")
        assert r.status_code == 404 and "is connected to vramd's hook channel" in r.json()["error"]["message"], r.text

        # a new instance of the workload is the workload's; the survivor is never moved with it
        pid2, port2 = started_workload(d2)
        assert pid2 != pid and port2 != port
        r = d2.post(f"/api/hook/processes/{pid2}/offload")
        assert r.status_code == 409 and "vramctl offload fcs" in r.json()["error"]["message"], r.text
        r = d2.ctl("offload", "fcs", check=0)
        assert "64MiB" in r.stdout and "128MiB" not in r.stdout, r.stdout
        assert hook_proc(d2, pid, state="running", resident_bytes=128 * MIB)
        d2.ctl("restore", "fcs", check=0)
        assert check(port2).text == f"ok {64 * MIB}"
        assert check(port).text == f"ok {64 * MIB}"

        # vramd stops what it started, not the survivor
        assert d2.stop() == 0
        assert not pid_alive(pid2)
        assert pid_alive(pid)
        assert check(port).text == f"ok {64 * MIB}"
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        end_survivor(pid)


def test_vramd_killed_while_offloaded_takes_it_back_and_restores(daemon):
    d = daemon(RESTART_CONFIG)
    pid, port = started_workload(d)
    r = d.ctl("offload", "fcs", check=0)
    assert "64MiB" in r.stdout, r.stdout
    wait_for(lambda: hook_proc(d, pid, state="offloaded"), what="the old vramd to hear it is offloaded")
    d2 = None
    try:
        sigkill(d)
        d2 = restart(d, forget=False)
        # taken back from the state file: its workload's, offloaded, with its bytes
        w = d2.workload("fcs")
        assert (w["state"], w["pid"], w["adopted"]) == ("offloaded", pid, True), w
        assert w["memory"]["offloaded_bytes"] == 64 * MIB, w["memory"]
        # the hook says where it stands right after its hello, not at its next change (none comes)
        p = wait_for(lambda: hook_proc(d2, pid, connected=True, state="offloaded"), timeout=5,
                     interval=0.1, what="the reconnected hook to say it is offloaded")
        assert p["resident_bytes"] == 64 * MIB and p["external"] is False, p
        r = d2.ctl("restore", "fcs", check=0)
        assert "restored" in r.stdout, r.stdout
        assert d2.state("fcs") == "ready"
        assert check(port).text == f"ok {64 * MIB}"
        assert_capped(port)
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        end_survivor(pid)
