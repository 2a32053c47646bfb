# SPDX-License-Identifier: MIT
"""share: mps against a stand-in nvidia-cuda-mps-control: one control daemon
for both replicas, shown in /api/status and /api/mps with its clients and
their caps; MPS started and stopped by hand; the daemon quits with the
workload's last process."""
import os

import pytest

from conftest import SOURCE, wait_for

FAKE = os.path.join(SOURCE, "tests", "unit", "data", "mps-fake-control")

CONFIG = """
gpus:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  rerank:
    cmd: [{demo}, --port, "${PORT}", --model, rerank, --memory, 2GiB, --load-time, 100ms]
    gpus: [0]
    memory: 2GiB
    replicas: 2
    share: mps
    compute: 40
    health: /health
"""


@pytest.fixture
def fake_mps(monkeypatch):
    monkeypatch.setenv("VRAM_MPS_CONTROL", FAKE)


def daemons(d):
    r = d.get("/api/mps")
    assert r.status_code == 200, r.text
    return r.json()["daemons"]


def test_mps_workload_and_by_hand(daemon, fake_mps):
    d = daemon(CONFIG, gpus="2x24GiB")
    r = d.post("/api/workloads/rerank/start")
    assert r.status_code == 200, r.text

    st = d.status()
    assert st["mps"]["available"] is True
    assert st["mps"]["control"] == FAKE
    [dm] = st["mps"]["daemons"]
    assert dm["gpus"] == [0] and dm["state"] == "running" and dm["control_pid"] > 0
    assert len(dm["clients"]) == 2
    [w] = [w for w in st["workloads"] if w["name"] == "rerank"]
    assert w["mps"]["used"] is True
    clients = w["mps"]["clients"]
    assert sorted(c["replica"] for c in clients) == [0, 1]
    for c in clients:
        assert c["pid"] in [i["pid"] for i in w["instances"]]
        assert c["mem_limit"] == "0=2G" and c["compute_percent"] == 40
        assert c["control_pid"] == dm["control_pid"]
        with open(f"/proc/{c['pid']}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        assert env[b"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == b"0=2G"
        assert env[b"CUDA_MPS_PIPE_DIRECTORY"].decode() == dm["pipe_dir"]

    # vramctl mps status: the daemon and both capped clients
    r = d.ctl("mps", "status", check=0)
    assert "running" in r.stdout and str(dm["control_pid"]) in r.stdout, r.stdout
    assert "rerank#0" in r.stdout and "rerank#1" in r.stdout and "0=2G" in r.stdout, r.stdout
    assert "40%" in r.stdout, r.stdout
    r = d.ctl("mps", "status", "--json", check=0)
    assert '"daemons"' in r.stdout

    # by hand: another GPU set, then gone again (REST, then vramctl)
    r = d.post("/api/mps/start", json={"gpus": [1]})
    assert r.status_code == 202, r.text
    wait_for(lambda: any(x["gpus"] == [1] and x["state"] == "running" for x in daemons(d)),
             what="MPS on GPU 1")
    r = d.post("/api/mps/stop", json={"gpus": [1]})
    assert r.status_code == 202, r.text
    wait_for(lambda: not any(x["gpus"] == [1] for x in daemons(d)), what="MPS on GPU 1 to quit")
    r = d.ctl("mps", "start", "--gpus", "1", check=0)
    assert "MPS on GPU 1: running" in r.stdout, r.stdout
    assert any(x["gpus"] == [1] and x["manual"] for x in daemons(d))
    r = d.ctl("mps", "stop", "--gpus", "1", check=0)
    assert "stopped" in r.stdout
    assert not any(x["gpus"] == [1] for x in daemons(d))
    r = d.ctl("mps", "stop", "--gpus", "0", check=1)
    assert "--force" in r.stderr or "force" in r.stderr, r.stderr
    d.ctl("mps", "start", "--gpus", "x", check=2)
    d.ctl("mps", "frob", check=2)
    # clients attached: refused unless forced; an unknown GPU is named
    r = d.post("/api/mps/stop", json={"gpus": [0]})
    assert r.status_code == 409, r.text
    r = d.post("/api/mps/start", json={"gpus": [7]})
    assert r.status_code == 400 and "no GPU 7" in r.text, r.text

    # the workload stops: its daemon quits with the last client
    pid = dm["control_pid"]
    r = d.post("/api/workloads/rerank/stop")
    assert r.status_code == 200, r.text
    wait_for(lambda: daemons(d) == [], what="MPS daemon to quit")
    wait_for(lambda: not os.path.exists(f"/proc/{pid}/stat") or
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             what="the control daemon to exit")


def test_mps_missing_binary(daemon, monkeypatch):
    monkeypatch.setenv("VRAM_MPS_CONTROL", "/no-such-dir/nvidia-cuda-mps-control")
    d = daemon(CONFIG, gpus="2x24GiB")
    r = d.post("/api/workloads/rerank/start")
    assert r.status_code == 500, r.text
    assert "set fallback: exclusive to run without MPS" in r.text
    st = d.status()
    assert st["mps"]["available"] is False
    [w] = [w for w in st["workloads"] if w["name"] == "rerank"]
    assert w["state"] == "failed"
