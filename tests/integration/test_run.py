# SPDX-License-Identifier: MIT
"""Ad-hoc workloads: `vramctl run` and POST/DELETE /api/workloads.

A command run by hand becomes a workload with the hook, shows in status
with "adhoc": true, passes its output and exit status back to vramctl, and
is removed when it ends.
"""
import os
import signal
import subprocess

import test_hook as hk
from conftest import VRAMCTL, wait_for


def hook_env(**extra):
    """The caller's environment; in the sanitizer build libvram.so needs its runtime first."""
    env = dict(os.environ, ASAN_OPTIONS=hk.ASAN_OPTIONS, **extra)
    if hk.ASAN_RT:
        env["LD_PRELOAD"] = hk.ASAN_RT
    return env


def adhoc_names(d):
    return [w["name"] for w in d.status()["workloads"] if w.get("adhoc")]


def test_run_prints_output_and_exits_with_the_status(daemon):
    d = daemon()
    r = subprocess.run([VRAMCTL, "--url", d.sock, "run", "--", "sh", "-c",
                        "echo hi; echo to-stderr >&2; exit 3"],
                       env=hook_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["hi", "to-stderr"], r.stdout
    assert "[vramd]" not in r.stdout
    wait_for(lambda: adhoc_names(d) == [], what="the ad-hoc workload to be removed")
    # the caller's working directory and environment go with the command
    cwd = d.workdir
    r = subprocess.run([VRAMCTL, "--url", d.sock, "run", "--name", "envy", "--", "sh", "-c",
                        'echo "$PWD $RUN_TEST_VALUE"; [ -z "$VRAMD_URL" ]'],
                       cwd=cwd, env=hook_env(RUN_TEST_VALUE="v42", VRAMD_URL=d.sock),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{os.path.realpath(cwd)} v42"


def test_run_with_the_hook_shows_in_status_and_stops_on_sigint(daemon):
    d = daemon()
    env = hook_env(LD_LIBRARY_PATH=hk.FAKECUDA, FC_SERVER_MIB="64",
                   VRAM_HOOK_CONTEXT_MEMORY="64MiB", VRAM_FAKE_CONTEXT_MEMORY="64MiB")
    p = subprocess.Popen([VRAMCTL, "--url", d.sock, "run", "--name", "fcs", "--memory", "1GiB",
                          "--", hk.SERVER], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        def hooked():
            w = d.get("/api/workloads/fcs")
            if w.status_code != 200:
                return None
            w = w.json()
            return w if w["hook"] and w["hook"]["processes"] else None
        w = wait_for(hooked, timeout=30, what="fc-server to register with the hook")
        d.seen_pids.add(w["pid"])
        assert w["adhoc"] is True and w["exit"] is None
        assert w["engine"]["name"] == "hook"
        assert w["memory"]["declared"] == "1GiB"
        assert len(w["gpus"]) == 1
        st = [x for x in d.status()["workloads"] if x["name"] == "fcs"]
        assert st and st[0]["adhoc"] is True
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode in (0, 128 + signal.SIGTERM), (p.returncode, err)
    wait_for(lambda: d.get("/api/workloads/fcs").status_code == 404, what="fcs to be removed")


def test_create_refusals_and_delete(daemon):
    # over the control socket: over TCP a command needs the token and daemon.run_as
    # (test_runas.py)
    d = daemon()
    r = d.sock_request("POST", "/api/workloads", json={"name": "job", "cmd": ["sleep", "30"]})
    assert r.status_code == 201, r.text
    w = r.json()
    assert w["name"] == "job" and w["adhoc"] is True and w["pid"]
    d.seen_pids.add(w["pid"])
    assert d.workload("job")["state"] in ("starting", "ready")
    r = d.sock_request("POST", "/api/workloads", json={"name": "job", "cmd": ["true"]})
    assert r.status_code == 409 and "job" in r.json()["error"]["message"]
    configured = d.status()["workloads"][0]["name"]
    assert d.sock_request("POST", "/api/workloads",
                          json={"name": configured, "cmd": ["true"]}).status_code == 409
    assert d.http.delete(d.url + f"/api/workloads/{configured}").status_code == 409
    for bad in ({"cmd": []}, {"cmd": "true"}, {"cmd": ["true"], "memory": "lots"},
                {"cmd": ["true"], "gpus": -1}, {"cmd": ["true"], "name": "a/b"},
                {"cmd": ["true"], "colour": "red"}, {"cmd": ["true"], "cwd": "relative"}):
        r = d.sock_request("POST", "/api/workloads", json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert d.sock_request("POST", "/api/workloads",
                          json={"cmd": ["true"], "memory": "10TiB"}).status_code == 503
    r = subprocess.run([VRAMCTL, "--url", d.sock, "run", "--name", "job", "--", "true"],
                       env=hook_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "exists" in r.stderr, r.stderr
    r = d.sock_request("DELETE", "/api/workloads/job")
    assert r.status_code == 200, r.text
    assert d.get("/api/workloads/job").status_code == 404
    assert not [p for p in [w["pid"]] if os.path.exists(f"/proc/{p}") and
                open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert d.sock_request("DELETE", "/api/workloads/job").status_code == 404
