# SPDX-License-Identifier: MIT
"""vramd as a program: config checking, vramctl against it, clean shutdown."""
import json
import os
import re
import signal
import subprocess
import tempfile

from conftest import VRAMCTL, VRAMD, pid_alive, wait_for


def write(text):
    d = tempfile.mkdtemp(prefix="vramd-cfg-")
    path = os.path.join(d, "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


BAD_MEMORY = """workloads:
  llm:
    cmd: [sleep, "100"]
    gpus: 1
    memory: lots
"""


def test_check_config():
    path = write(BAD_MEMORY)
    r = subprocess.run([VRAMD, "--check-config", path], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert r.stdout == ""
    assert re.search(re.escape(path) + r":5:\d+: workloads\.llm\.memory", r.stderr), r.stderr

    # --config refuses it the same way and starts nothing.
    r = subprocess.run([VRAMD, "--config", path, "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0
    assert re.search(re.escape(path) + r":5:\d+:", r.stderr), r.stderr

    typo = write("workloads:\n  a:\n    cmd: [sleep, '1']\n    gpus: 0\n    memroy: 1GiB\n")
    r = subprocess.run([VRAMD, "--check-config", typo], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and ":5:5:" in r.stderr and "memory" in r.stderr, r.stderr

    good = write("workloads:\n  a:\n    cmd: [sleep, '1']\n    gpus: 0\n")
    r = subprocess.run([VRAMD, "--check-config", good], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")

    r = subprocess.run([VRAMD, "--bogus"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    r = subprocess.run([VRAMD, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("vramd ")


def test_simulated_gpus_are_announced(daemon):
    d = daemon()
    assert re.search(r"GPUs: .*simulated", d.log_text(), re.I), d.log_text()


def test_vramctl_lifecycle(daemon):
    d = daemon()
    r = d.ctl("status", check=0)
    assert "chat" in r.stdout and "stopped" in r.stdout
    assert re.search(r"\[[█░]{10}\] 0\.0/80\.0GiB", r.stdout), r.stdout

    r = d.ctl("start", "chat", check=0)
    assert re.match(r"chat: started in \d+\.\d\d s", r.stdout), r.stdout
    r = d.ctl("status", check=0)
    assert re.search(r"^chat\s+ready\s+[01]\s+\d+\s+20GiB", r.stdout, re.M), r.stdout
    assert re.search(r"\[[█]{2}[█░]{8}\] 20\.0/80\.0GiB", r.stdout), r.stdout

    r = d.ctl("offload", "chat", check=0)
    assert re.match(r"chat: offloaded in \d+\.\d\d s", r.stdout), r.stdout
    assert d.state("chat") == "offloaded"
    r = d.ctl("restore", "chat", check=0)
    assert r.stdout.startswith("chat: restored in ")
    # Over TCP too.
    r = d.ctl("status", "--json", url=d.url, check=0)
    st = json.loads(r.stdout)
    assert [w["state"] for w in st["workloads"] if w["name"] == "chat"] == ["ready"]

    r = d.ctl("timeout", "chat", "10m", check=0)
    assert r.stdout == "chat: release after 10m idle\n"
    r = d.ctl("logs", "chat", "-n", "5", check=0)
    assert len(r.stdout.splitlines()) <= 5

    # Failures: exit 1 with the daemon's message on stderr; usage: 2.
    r = d.ctl("offload", "embed", check=1)
    assert "offload embed:" in r.stderr and r.stdout == ""
    r = d.ctl("start", "nope", check=1)
    assert 'no workload named "nope"' in r.stderr
    d.ctl("start", check=2)
    d.ctl("frobnicate", check=2)

    r = d.ctl("stop", "chat", check=0)
    assert r.stdout.startswith("chat: stopped in ")


def test_vramctl_without_daemon():
    r = subprocess.run([VRAMCTL, "--url", "/nonexistent/vramd.sock", "status"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert "cannot connect to vramd at /nonexistent/vramd.sock" in r.stderr


def test_vramctl_plan():
    src = os.environ.get("VRAM_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")
    example = os.path.join(src, "examples", "agents-tp3.yaml")
    r = subprocess.run([VRAMCTL, "plan", example, "--gpus", "4x80GiB"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    r = subprocess.run([VRAMCTL, "plan", example, "--gpus", "4x80GiB", "--json"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    json.loads(r.stdout)
    r = subprocess.run([VRAMCTL, "plan", example], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2


def test_sigterm_stops_children(daemon):
    d = daemon()
    assert d.post("/api/workloads/chat/start").status_code == 200
    assert d.post("/api/workloads/embed/start").status_code == 200
    pids = [d.workload(n)["pid"] for n in ("chat", "embed")]
    assert all(pid_alive(p) for p in pids)
    sock = d.sock
    rc = d.stop(timeout=15)
    assert rc == 0, d.log_text()
    for p in pids:
        assert not pid_alive(p), f"workload process {p} outlived vramd"
    assert not os.path.exists(sock), "the control socket was left behind"


def test_stale_socket_is_replaced(daemon):
    d = daemon()
    sock = d.sock
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    assert os.path.exists(sock)
    # A new daemon with the same state dir takes the socket over.
    cfg = open(d.config_path).read()
    d2 = daemon(cfg.replace("daemon:\n", f"daemon:\n  socket: {sock}\n"))
    d2.ctl("status", url=sock, check=0)
