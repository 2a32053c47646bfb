# SPDX-License-Identifier: MIT
"""POST /api/attach: a process group vramd did not start (a Slurm step's tasks,
registered by spank_vramd.so) becomes an attached workload: listed, charged on
its GPU, and never signalled by vramd, neither when it is removed, nor when
its leader ends, nor when vramd stops. tests/slurm/ drives it through Slurm.
"""
import os
import signal
import subprocess
import time

from conftest import pid_alive, wait_for

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
workloads: {}
"""
MIB = 1 << 20


def group(n_members=2):
    """A process group of sleeps (its leader first); the caller kills it."""
    p = subprocess.Popen(["sh", "-c", "sleep 300 & exec sleep 300"], start_new_session=True)
    wait_for(lambda: len(members(p.pid)) >= n_members, what="the group's members")
    return p


def members(pgid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                out.append(int(d))
    return out


def attach(d, pid, name="slurm-7.0", **extra):
    body = {"name": name, "pid": pid, "uid": os.getuid(), "gid": os.getgid(),
            "memory": "256MiB", "gpus": [0]}
    body.update(extra)
    return d.sock_request("POST", "/api/attach", json=body)


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def test_attach_lists_charges_and_remove_lets_go(daemon):
    d = daemon(CONFIG, gpus="1x1GiB")
    p = group()
    try:
        r = attach(d, p.pid, offload_after="5m", priority=3)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["name"] == "slurm-7.0" and body["state"] == "ready"
        assert body["hook_socket"] == d.sock + ".hook" and os.path.exists(body["hook_socket"])
        w = d.workload("slurm-7.0")
        assert w["adhoc"] and w["pid"] == p.pid
        assert w["memory"]["per_gpu_bytes"] == 256 * MIB
        assert d.status()["gpus"][0]["memory"]["used"] == 256 * MIB  # charged in the ledger
        # and in /metrics, as ad-hoc workloads are
        m = d.get("/metrics").text
        assert 'vram_workload_state{workload="slurm-7.0",state="ready"} 1' in m, m
        assert 'vram_workload_gpu_memory_bytes{workload="slurm-7.0"} 268435456' in m, m
        # removing it lets go of the processes: none of them is signalled
        r = d.sock_request("DELETE", "/api/workloads/slurm-7.0")
        assert r.status_code == 200, r.text
        wait_for(lambda: all(x["name"] != "slurm-7.0" for x in d.status()["workloads"]),
                 what="the attached workload to be removed")
        assert d.status()["gpus"][0]["memory"]["used"] == 0
        time.sleep(0.5)
        assert p.poll() is None and len(members(p.pid)) == 2, "vramd signalled an attached group"
    finally:
        kill_group(p)


def test_attach_leader_exit_spares_the_rest_of_its_group(daemon):
    d = daemon(CONFIG, gpus="1x1GiB")
    p = group()
    try:
        assert attach(d, p.pid).status_code == 201
        other = [x for x in members(p.pid) if x != p.pid][0]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        wait_for(lambda: d.workload("slurm-7.0")["state"] in ("stopped", "failed"),
                 what="the workload to see its leader end")
        time.sleep(0.5)
        # a spawned workload's leftovers are killed with its leader; another task of a step is not
        assert pid_alive(other), "vramd killed the rest of an attached group"
        # and there is nothing to start again: vramd would run the marker word as a command
        r = d.sock_request("POST", "/api/workloads/slurm-7.0/start")
        assert r.status_code == 409 and "is attached" in r.json()["error"]["message"], r.text
        os.kill(other, signal.SIGKILL)
    finally:
        kill_group(p)


def test_attach_vramd_stop_leaves_the_group_running(daemon):
    d = daemon(CONFIG, gpus="1x1GiB")
    p = group()
    try:
        assert attach(d, p.pid).status_code == 201
        assert d.stop() == 0
        time.sleep(0.5)
        assert p.poll() is None and len(members(p.pid)) == 2, "vramd's stop ended an attached group"
    finally:
        kill_group(p)


def test_attach_refusals(daemon):
    d = daemon(CONFIG, gpus="1x1GiB")
    p = group()
    try:
        # over TCP nobody may vouch for a pid and a uid, not even with the token
        r = d.post("/api/attach", json={"name": "x", "pid": p.pid, "uid": 0, "gid": 0})
        assert r.status_code == 403 and "root" in r.json()["error"]["message"], r.text
        r = d.sock_request("POST", "/api/attach", json={"name": "x", "uid": 0, "gid": 0})
        assert r.status_code == 400 and "pid" in r.json()["error"]["message"], r.text
        r = attach(d, p.pid, memory="lots")
        assert r.status_code == 400 and "memory" in r.json()["error"]["message"], r.text
        r = attach(d, p.pid, gpus=[3])
        assert r.status_code == 400 and "GPU 3" in r.json()["error"]["message"], r.text
        # not a group leader: vramd would have to signal a group that is not the process's own
        other = [x for x in members(p.pid) if x != p.pid][0]
        r = attach(d, other)
        assert r.status_code == 400 and "leader" in r.json()["error"]["message"], r.text
        assert all(x["name"] != "slurm-7.0" for x in d.status()["workloads"])
        r = attach(d, 999999)
        assert r.status_code == 404 and "999999" in r.json()["error"]["message"], r.text
        assert attach(d, p.pid).status_code == 201
        r = attach(d, p.pid)
        assert r.status_code == 409 and r.json()["error"]["code"] == "name_taken", r.text
        # nor the names of Slurm's steps: a user could keep a step from attaching
        r = d.sock_request("POST", "/api/workloads", json={"name": "slurm-8.0", "cmd": ["true"]})
        assert r.status_code == 400 and "kept for Slurm steps" in r.json()["error"]["message"], r.text
        # the command word that marks attached workloads is not for vramctl run
        r = d.sock_request("POST", "/api/workloads", json={"cmd": ["(attached)"]})
        assert r.status_code == 400 and "(attached)" in r.json()["error"]["message"], r.text
    finally:
        kill_group(p)
