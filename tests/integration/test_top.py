# SPDX-License-Identifier: MIT
"""vramctl top in a real terminal: tmux runs it detached, keys are sent to
it and the pane is read back as a user sees it (tmux capture-pane -p)."""
import os
import re
import shutil
import subprocess
import uuid

import pytest
import requests

from conftest import DEFAULT_CONFIG, VRAMCTL, wait_for

TOP_CONFIG = DEFAULT_CONFIG + """
  slow:
    cmd: [{demo}, --port, "${PORT}", --model, slow, --memory, 30GiB, --load-time, 1500ms]
    gpus: 1
    memory: 30GiB
    health: /health
"""


class Pane:
    """vramctl top in a detached tmux session on a server of its own."""

    def __init__(self, url):
        self.server = "vramtop-" + uuid.uuid4().hex[:8]
        self.tmux(["new-session", "-d", "-s", "top", "-x", "120", "-y", "30",
                   f"{VRAMCTL} --url {url} top"])

    def tmux(self, args, check=True):
        return subprocess.run(["tmux", "-L", self.server] + args, capture_output=True, text=True,
                              check=check, timeout=30, env=dict(os.environ, TERM="xterm"))

    def text(self):
        r = self.tmux(["capture-pane", "-p", "-t", "top"], check=False)
        return r.stdout if r.returncode == 0 else ""

    def keys(self, *keys):
        self.tmux(["send-keys", "-t", "top"] + list(keys))

    def rows(self):
        """The workload rows: [(selected, name, state, gpus, gpu_mem, host_mem, rate)]."""
        out, seen_head = [], False
        for line in self.text().splitlines():
            if "WORKLOAD" in line and "STATE" in line:
                seen_head = True
                continue
            m = re.match(r"^([> ]) (\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s", line)
            if seen_head and m:
                out.append((m.group(1) == ">",) + m.groups()[1:])
        return out

    def row(self, name):
        return next((r for r in self.rows() if r[1] == name), None)

    def alive(self):
        return self.tmux(["has-session", "-t", "top"], check=False).returncode == 0

    def close(self):
        self.tmux(["kill-server"], check=False)


@pytest.fixture
def pane():
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (make deps installs it)")
    made = []

    def make(url):
        p = Pane(url)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_top_shows_and_acts(daemon, pane):
    d = daemon(TOP_CONFIG)
    d.ctl("start", "embed", check=0)
    p = pane(d.sock)
    # GPU bars, the workloads sorted by memory: embed holds 4GiB, the rest nothing
    wait_for(lambda: p.rows() and p.rows()[0][1] == "embed", 15, what="top to draw embed first")
    text = p.text()
    assert re.search(r"^GPU0\s+\[\|*\s*\] \d+\.\d/80\.0GiB", text, re.M), text
    assert "4.0/80.0GiB" in text, text
    assert p.rows()[0][:3] == (True, "embed", "ready")
    assert {r[1]: r[2] for r in p.rows()} == {"embed": "ready", "chat": "stopped", "slow": "stopped"}

    # select slow (j moves down) and start it with s: starting, then ready, as it happens
    names = [r[1] for r in p.rows()]
    for _ in range(names.index("slow")):
        p.keys("j")
    wait_for(lambda: (p.row("slow") or (False,))[0], 10, what="slow to be selected")
    p.keys("s")
    wait_for(lambda: p.row("slow")[2] == "starting", 10, interval=0.05, what="slow starting in top")
    assert "start slow: accepted (now starting)" in p.text()
    wait_for(lambda: p.row("slow")[2] == "ready", 20, what="slow ready in top")
    assert d.state("slow") == "ready"
    # it holds 30GiB now: first, and still selected
    wait_for(lambda: p.rows()[0][:2] == (True, "slow"), 10, what="slow sorted first, selected")
    assert p.row("slow")[4] == "30GiB"

    # offload it with o
    p.keys("o")
    wait_for(lambda: p.row("slow")[2] == "offloaded", 20, what="slow offloaded in top")
    assert d.state("slow") == "offloaded"
    wait_for(lambda: p.row("slow")[5] == "30GiB", 10, what="slow's host memory in top")
    # and restore it with r
    p.keys("r")
    wait_for(lambda: p.row("slow")[2] == "ready", 20, what="slow restored in top")

    # request rates come from /metrics
    for _ in range(30):
        assert requests.get(d.url + "/w/embed/health", timeout=10).status_code == 200
    wait_for(lambda: float(p.row("embed")[6]) > 0, 10, what="a request rate for embed")

    # stop asks first; any other key cancels
    wait_for(lambda: p.rows()[0][1] == "slow", 10, what="slow first")
    p.keys("x")
    wait_for(lambda: "stop slow? y to confirm" in p.text(), 10, what="the stop question")
    p.keys("n")
    wait_for(lambda: "stop slow: cancelled" in p.text(), 10, what="the cancel")
    assert d.state("slow") == "ready"
    p.keys("x")
    wait_for(lambda: "stop slow? y to confirm" in p.text(), 10, what="the stop question")
    p.keys("y")
    wait_for(lambda: p.row("slow")[2] == "stopped", 20, what="slow stopped in top")
    assert d.state("slow") == "stopped"

    # q quits
    p.keys("q")
    wait_for(lambda: not p.alive(), 10, what="top to quit")


def test_top_over_http(daemon, pane):
    d = daemon(TOP_CONFIG)
    p = pane(d.url)
    wait_for(lambda: p.row("chat") is not None, 15, what="top over HTTP")
    assert "events: live" in p.text()
    assert p.rows()[0][0] is True  # the first row is selected
    p.keys("q")
    wait_for(lambda: not p.alive(), 10, what="top to quit")


def test_top_without_a_daemon():
    r = subprocess.run([VRAMCTL, "--url", "/nonexistent/vramd.sock", "top"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "vramctl: top: cannot connect to vramd at /nonexistent/vramd.sock" in r.stderr
