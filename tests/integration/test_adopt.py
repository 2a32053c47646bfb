# SPDX-License-Identifier: MIT
"""vramd killed with SIGKILL and started again on the same state directory:
the processes it recorded in state.json are taken back as its workloads
(adopted), in the states they were in, and nothing is started twice.

The workloads: "web" (a demo server behind the gateway, loaded by wrk while
vramd dies), "parked" (a demo server offloaded by the sim engine), "fcs"
(fc-server on the fake CUDA driver, offloaded by the hook engine: its
"device" memory holds a pattern that /check verifies after the restore) and
"slow" (a demo server still loading, that is, starting, when vramd dies).
"""
import json
import os
import shutil
import signal
import subprocess
import time

import requests

from conftest import DEMO, Daemon, free_port, pid_alive, wait_for
from test_hook import CONFIG as HOOK_CONFIG, check
from test_hook_reconnect import sigkill
from test_runas import job_env

MIB = 1 << 20

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  web:
    cmd: [{demo}, --port, "${PORT}", --model, web, --memory, 4GiB, --load-time, 100ms]
    gpus: 1
    memory: 4GiB
    health: /health
  parked:
    cmd: [{demo}, --port, "${PORT}", --model, parked, --memory, 8GiB, --load-time, 100ms]
    gpus: 1
    memory: 8GiB
    health: /health
  slow:
    cmd: [{demo}, --port, "${PORT}", --model, slow, --memory, 2GiB, --load-time, 4s]
    gpus: 1
    memory: 2GiB
    health: /health
""" + HOOK_CONFIG[HOOK_CONFIG.index("  fcs:"):].replace("memory: 1GiB", "memory: 256MiB")


def restart(d, wait=True):
    """A new vramd on the same config and state directory."""
    shutil.copy(d.log_path, d.log_path + ".killed")
    d2 = Daemon(d.workdir, d.config_path, d.port, d.sock, ["--gpus", "2x80GiB"])
    if wait:
        d2.wait_ready()
    return d2


def processes_of(name, *daemons):
    """Pids of live processes whose environment says VRAM_WORKLOAD=name, in the session of
    one of daemons (each vramd runs in a session of its own, which its workloads keep;
    other tests on the machine may run workloads of the same name)."""
    want = f"VRAM_WORKLOAD={name}".encode()
    sids = {x.proc.pid for x in daemons}
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" or int(fields[3]) not in sids:
            continue
        if want in env:
            out.append(int(entry))
    return sorted(out)


def describe(pids):
    """pid: command line, for a failed assertion."""
    out = {}
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                out[p] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            out[p] = "?"
    return out


def state_file(d):
    with open(os.path.join(d.workdir, "state", "state.json")) as f:
        return json.load(f)


def recorded(d, name):
    try:
        sf = state_file(d)
    except (OSError, ValueError):
        return None
    for w in sf.get("workloads", []):
        if w["name"] == name and w.get("instances"):
            return w
    return None


def hook_connected(d, name, pid):
    hook = d.workload(name)["hook"] or {"processes": []}
    return any(p["pid"] == pid and p["connected"] for p in hook["processes"])


def kill_all(names, *daemons):
    """Ends what the test's vramds left running of names (nobody's children now)."""
    daemons = [x for x in daemons if x is not None]
    for n in names:
        for pid in processes_of(n, *daemons):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_sigkill_under_load_every_workload_is_taken_back(daemon):
    d = daemon(CONFIG)
    names = ["web", "parked", "slow", "fcs"]
    d2 = None
    wrk = None
    try:
        for n in ("web", "parked", "fcs"):
            d.ctl("start", n, check=0)
        wait_for(lambda: hook_connected(d, "fcs", d.workload("fcs")["pid"]),
                 what="fc-server's hook to register")
        assert check(d.workload("fcs")["port"]).text == f"ok {64 * MIB}"
        d.ctl("offload", "parked", check=0)
        wait_for(lambda: (lambda h: h and h["measured_bytes"] == 128 * MIB)(d.workload("fcs")["hook"]),
                 what="fc-server's usage report")
        d.ctl("offload", "fcs", check=0)
        r = d.post("/api/workloads/slow/start", params={"wait": "false"})
        assert r.status_code in (200, 202), r.text
        d.wait_state("slow", "starting", timeout=5)
        before = {n: d.workload(n) for n in names}
        assert [before[n]["state"] for n in names] == ["ready", "offloaded", "starting", "offloaded"]
        pids = {n: before[n]["pid"] for n in names}
        wait_for(lambda: all(recorded(d, n) for n in names), 5,
                 what="the state file to record all four")

        # wrk streams requests through the gateway to web while vramd is killed
        wrk = subprocess.Popen(["wrk", "-t1", "-c4", "-d3s", f"{d.url}/w/web/health"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        sigkill(d)
        for n in names:
            assert pid_alive(pids[n]), f"{n} died with vramd"

        t0 = time.monotonic()
        d2 = restart(d, wait=False)

        def serves():
            try:
                return requests.get(f"{d2.url}/w/web/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False
        wait_for(serves, 5, interval=0.01, what="the gateway to serve web again")
        serving_s = time.monotonic() - t0
        print(f"gateway serving again {serving_s * 1000:.0f} ms after the new vramd was started")
        assert serving_s < 1.0, serving_s
        wrk.wait(timeout=10)

        after = {n: d2.workload(n) for n in names}
        assert after["web"]["state"] == "ready"
        assert after["parked"]["state"] == "offloaded"
        assert after["fcs"]["state"] == "offloaded"
        assert after["slow"]["state"] in ("starting", "ready")
        for n in names:
            assert after[n]["pid"] == pids[n], (n, after[n])
            assert after[n]["adopted"] is True, (n, after[n])
            assert processes_of(n, d, d2) == [pids[n]], (n, describe(processes_of(n, d, d2)))
        assert after["parked"]["memory"]["offloaded_bytes"] == before["parked"]["memory"]["offloaded_bytes"]
        assert after["web"]["port"] == before["web"]["port"]
        log = d2.log_text()
        assert "took back 4 process(es): 1 workload(s) ready, 2 offloaded, 0 parked, 1 starting" in log, log

        # slow finishes loading under the new vramd; nothing is started twice
        d2.wait_state("slow", "ready", timeout=15)
        assert d2.workload("slow")["pid"] == pids["slow"]

        # the hooked one comes back through the gateway's first request, contents intact
        wait_for(lambda: hook_connected(d2, "fcs", pids["fcs"]), 5,
                 what="fc-server's hook to reconnect to the new vramd")
        procs = d2.workload("fcs")["hook"]["processes"]
        assert [(p["pid"], p["external"]) for p in procs] == [(pids["fcs"], False)], procs
        r = requests.get(f"{d2.url}/w/fcs/check", timeout=30)
        assert r.status_code == 200 and r.text == f"ok {64 * MIB}", r.text
        assert d2.state("fcs") == "ready"
        # the sim one restores too, onto the GPU ledger of this vramd
        d2.ctl("restore", "parked", check=0)
        assert d2.workload("parked")["pid"] == pids["parked"]
        for n in names:
            assert processes_of(n, d, d2) == [pids[n]], (n, processes_of(n, d, d2))

        # a deliberate stop is still a stop: SIGTERM ends every workload, adopted ones included
        assert d2.stop() == 0
        for n in names:
            wait_for(lambda: not pid_alive(pids[n]), 10, what=f"{n} to be stopped")
        assert not os.path.exists(os.path.join(d.workdir, "state", "state.json"))
    finally:
        if wrk and wrk.poll() is None:
            wrk.kill()
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(names, d, d2)


def test_adopted_process_exit_is_noticed_and_restarted(daemon):
    cfg = CONFIG.replace("    health: /health\n  parked:",
                         "    health: /health\n    restart: { policy: on-failure, backoff_max: 1s }\n  parked:", 1)
    d = daemon(cfg)
    d2 = None
    try:
        d.ctl("start", "web", check=0)
        pid = d.workload("web")["pid"]
        wait_for(lambda: recorded(d, "web"), 5, what="web to be recorded")
        sigkill(d)
        d2 = restart(d)
        assert d2.workload("web")["pid"] == pid
        # not vramd's child: its exit comes through a pidfd, and the restart policy applies
        os.killpg(pid, signal.SIGKILL)
        w = wait_for(lambda: (lambda w: w if w["pid"] not in (None, pid) and w["state"] == "ready"
                              else None)(d2.workload("web")), 15,
                     what="web to be started again after its adopted process died")
        assert w["adopted"] is False
        assert processes_of("web", d, d2) == [w["pid"]]
        log = d2.log_text()
        assert "its exit status is unknown" in log, log
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(["web"], d, d2)


def test_runtime_settings_and_adhoc_workloads_survive(daemon):
    d = daemon(CONFIG)
    d2 = None
    try:
        d.ctl("start", "web", check=0)
        r = d.put("/api/workloads/web/idle", json={"offload_after": "7m", "release_after": "never"})
        assert r.status_code == 200, r.text
        r = d.sock_request("POST", "/api/workloads", json={"cmd": ["sleep", "60"], "env": job_env()})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["name"] == "run-1", job
        wait_for(lambda: recorded(d, "run-1") and
                 "offload_after_ms" in (recorded(d, "web") or {}).get("runtime", {}), 5,
                 what="the state file to record run-1 and web's idle timer")
        sigkill(d)
        d2 = restart(d)
        w = d2.workload("web")
        assert w["timeouts"]["offload_after_seconds"] == 420, w["timeouts"]
        assert w["timeouts"]["release_after_seconds"] is None, w["timeouts"]
        j = d2.workload("run-1")
        assert j["adhoc"] is True and j["adopted"] is True and j["state"] == "ready", j
        assert j["pid"] == job["pid"] and j["owner"] == job["owner"], (j, job)
        assert processes_of("run-1", d, d2) == [job["pid"]]
        # a new run after the restart does not take the name of one taken back
        r = d2.sock_request("POST", "/api/workloads", json={"cmd": ["sleep", "60"], "env": job_env()})
        assert r.status_code == 201 and r.json()["name"] == "run-2", r.text
        # the one taken back is removed as any other, its process stopped
        r = d2.sock_request("DELETE", "/api/workloads/run-1")
        assert r.status_code in (200, 202), r.text
        wait_for(lambda: not pid_alive(job["pid"]), 10, what="run-1's process to be stopped")
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(["web", "run-1", "run-2"], d, d2)


def test_bad_state_files_adopt_nothing_wrongly(daemon):
    d = daemon(CONFIG)
    d2 = None
    decoy = None
    try:
        d.ctl("start", "web", check=0)
        d.ctl("start", "parked", check=0)
        web_pid = d.workload("web")["pid"]
        wait_for(lambda: recorded(d, "web") and recorded(d, "parked"), 5, what="both recorded")
        sigkill(d)
        path = os.path.join(d.workdir, "state", "state.json")
        sf = json.load(open(path))
        # pid reuse: "parked"'s record now names a process that is another program
        decoy = subprocess.Popen(["sleep", "60"])
        for w in sf["workloads"]:
            if w["name"] == "parked":
                old_pid = w["instances"][0]["pid"]
                w["instances"][0]["pid"] = decoy.pid
        os.killpg(old_pid, signal.SIGKILL)
        with open(path, "w") as f:
            json.dump(sf, f)
        d2 = restart(d)
        log = d2.log_text()
        assert f"parked replica 0: pid {decoy.pid} is another process now (its start time differs)" in log, log
        assert decoy.poll() is None, "a process that is not ours was signalled"
        # its process ended while no vramd watched: a crash, restarted by its policy (on-failure)
        p = d2.wait_state("parked", "ready", timeout=10)
        assert p["pid"] not in (old_pid, decoy.pid) and p["adopted"] is False, p
        assert "parked: stopped -> starting: restart: its process ended while vramd was down" \
            in d2.log_text(), d2.log_text()
        assert d2.workload("web")["pid"] == web_pid
        d2.stop()
        wait_for(lambda: not pid_alive(web_pid), 10, what="web to be stopped")

        # a corrupt file and one of another version: one line each, nothing adopted
        for text, why in (('{"format": "vramd-state", "version": 1, "workloads": [{"na',
                           "is not valid JSON (truncated or corrupt)"),
                          ('{"format": "vramd-state", "version": 99, "workloads": []}',
                           "version 99")):
            with open(path, "w") as f:
                f.write(text)
            d3 = Daemon(d.workdir, d.config_path, free_port(), d.sock, ["--gpus", "2x80GiB"])
            try:
                d3.wait_ready()
                wait_for(lambda: "Ignoring the state file" in d3.log_text(), 5, what="the line")
                lines = [l for l in d3.log_text().splitlines() if "Ignoring the state file" in l]
                assert len(lines) == 1 and why in lines[0] and "starting clean" in lines[0], lines
                assert all(d3.state(n) == "stopped" for n in ("web", "parked", "fcs", "slow"))
            finally:
                d3.stop()
    finally:
        if decoy:
            decoy.kill()
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(["web", "parked"], d, d2)


def test_mps_workload_and_its_control_daemon_are_taken_back(daemon, monkeypatch):
    from test_mps import CONFIG as MPS_CONFIG, FAKE
    monkeypatch.setenv("VRAM_MPS_CONTROL", FAKE)
    d = daemon(MPS_CONFIG, gpus="2x24GiB")
    d2 = None
    try:
        r = d.post("/api/workloads/rerank/start")
        assert r.status_code == 200, r.text
        [dm] = d.status()["mps"]["daemons"]
        pids = sorted(i["pid"] for i in d.workload("rerank")["instances"])
        wait_for(lambda: (recorded(d, "rerank") or {}).get("instances") and
                 state_file(d).get("mps"), 5, what="the state file to record rerank and MPS")
        assert state_file(d)["mps"][0]["pid"] == dm["control_pid"], state_file(d)
        calls = os.path.join(dm["log_dir"], "calls.log")
        starts = open(calls).read().count("start args=-d")
        assert starts == 1
        sigkill(d)
        d2 = Daemon(d.workdir, d.config_path, d.port, d.sock, ["--gpus", "2x24GiB"])
        d2.wait_ready()
        w = d2.workload("rerank")
        assert w["state"] == "ready" and w["adopted"] is True, w
        assert sorted(i["pid"] for i in w["instances"]) == pids
        [dm2] = d2.status()["mps"]["daemons"]
        assert dm2["control_pid"] == dm["control_pid"] and dm2["state"] == "running", dm2
        assert sorted(c["pid"] for c in w["mps"]["clients"]) == pids, w["mps"]
        # no second control daemon was started for the processes taken back
        assert open(calls).read().count("start args=-d") == 1, open(calls).read()
        # and the daemon quits with the workload's last process, as before
        d2.ctl("stop", "rerank", check=0)
        wait_for(lambda: not pid_alive(dm["control_pid"]), 10, what="the control daemon to quit")
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        kill_all(["rerank"], d, d2)
