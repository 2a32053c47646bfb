# SPDX-License-Identifier: MIT
"""Workload output goes through an output relay (a vram-relay process per
workload process) into the log file, so that a workload that keeps writing
survives vramd's death: the relay then appends to the log file itself.
While vramd runs, the log keeps its notes and the failure report its tail.
"""
import os
import re
import signal
import sys
import time

import requests

from conftest import pid_alive, wait_for

CHATTY = os.path.join(os.path.dirname(__file__), "chatty_server.py")
GONE_NOTE = "[vramd] vramd is gone; the output relay writes here directly\n"

CONFIG = f"""
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  chatty:
    cmd: [{sys.executable}, {CHATTY}, "${{PORT}}"]
    gpus: 0
    health: /health
    restart: never
  crashy:
    cmd: [{sys.executable}, -c, "print('x' * 200000); print('the last words', flush=True); raise SystemExit(3)"]
    gpus: 0
    health: {{ tcp: true }}
    restart: never
"""


def log_path(d, name):
    return os.path.join(d.workdir, "state", "logs", f"{name}.log")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def ticks(text):
    return [int(n) for n in re.findall(r"^tick (\d+)$", text, re.M)]


def children(pid, comm):
    """Pids of pid's children named comm."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and name == comm:
            out.append(int(entry))
    return out


def test_workload_keeps_running_and_logging_after_vramd_dies(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    w = d.workload("chatty")
    pid, port = w["pid"], w["port"]
    path = log_path(d, "chatty")
    wait_for(lambda: len(ticks(read(path))) >= 5, what="ticks in the log")
    assert f"[vramd] replica 0: pid {pid}, port {port}" in read(path)
    relays = wait_for(lambda: children(d.proc.pid, "vram-relay"), what="the output relay")
    assert len(relays) == 1, relays  # one per workload process, not named vramd
    relay = relays[0]
    # nothing on its command line for `pkill -f` to match: not the state directory
    with open(f"/proc/{relay}/cmdline", "rb") as f:
        cmdline = [a.decode() for a in f.read().split(b"\0") if a]
    assert cmdline[:3] == ["vram-relay", "--output-relay", "chatty.log"], cmdline
    assert d.workdir not in " ".join(cmdline), cmdline

    try:
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.http.close()
        before = ticks(read(path))
        time.sleep(1.5)

        # the workload runs on: alive, answering, and still writing
        assert pid_alive(pid), "the workload died with vramd"
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        text = read(path)
        assert text.count(GONE_NOTE) == 1, text[-2000:]
        head, tail = text.split(GONE_NOTE)
        written_by_vramd, written_by_relay = ticks(head), ticks(tail)
        assert written_by_vramd[-1] >= before[-1]
        # about 30 ticks in 1.5 s, whole lines, in order; only what sat in the pipe
        # to vramd when it died (a line or two at most) is missing
        assert len(written_by_relay) >= 10, written_by_relay
        assert written_by_vramd == list(range(len(written_by_vramd)))
        first = written_by_relay[0]
        assert written_by_relay == list(range(first, first + len(written_by_relay)))
        assert 1 <= first - written_by_vramd[-1] <= 3, (written_by_vramd[-3:], first)
        all_ticks = ticks(text)
        wait_for(lambda: len(ticks(read(path))) > len(all_ticks), what="the log to grow further")
        assert pid_alive(relay)
    finally:
        # nobody's child now: end its group; the relay then sees the end of its input
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not pid_alive(pid), what="the workload to exit")
    wait_for(lambda: not pid_alive(relay), what="the relay to exit after its workload")


def test_notes_and_failure_tail_through_the_relay(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    pid = d.workload("chatty")["pid"]
    path = log_path(d, "chatty")
    wait_for(lambda: len(ticks(read(path))) >= 3, what="ticks in the log")
    d.ctl("stop", "chatty", check=0)
    text = read(path)
    assert GONE_NOTE not in text
    assert f"[vramd] replica 0 (pid {pid}) killed by signal 15 (Terminated)\n" in text, text[-500:]
    # the exit note comes after every line the process wrote
    assert re.search(r"^tick \d+$", text.split(f"(pid {pid}) killed", 1)[1], re.M) is None

    # a crash right after a burst of output: the failure carries its last line
    r = d.ctl("start", "crashy")
    assert r.returncode != 0
    w = d.wait_state("crashy", "failed")
    tail = w["log_tail"]
    assert "the last words\n[vramd] replica 0 (pid " in tail, tail[-300:]
    text = read(log_path(d, "crashy"))
    assert "x" * 200000 + "\nthe last words\n" in text
    assert re.search(r"\[vramd\] replica 0 \(pid \d+\) exited with status 3 unexpectedly\n", text)
    # every relay is gone with its workload (none left for vramd to reap at exit)
    wait_for(lambda: not children(d.proc.pid, "vram-relay"), what="the relays to exit")


def test_relay_hands_the_log_back_to_the_next_vramd(daemon):
    """After SIGKILL the relay writes the log; the next vramd takes the process back and
    the relay hands the log over: every tick once and in order, one writer again."""
    from conftest import Daemon, free_port
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    pid = d.workload("chatty")["pid"]
    path = log_path(d, "chatty")
    wait_for(lambda: len(ticks(read(path))) >= 5, what="ticks in the log")
    wait_for(lambda: os.path.exists(os.path.join(d.workdir, "state", "state.json")),
             what="the state file")
    [relay] = wait_for(lambda: children(d.proc.pid, "vram-relay"), what="the output relay")
    d2 = None
    try:
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.http.close()
        wait_for(lambda: GONE_NOTE in read(path), what="the relay to write the log itself")
        time.sleep(0.5)
        d2 = Daemon(d.workdir, d.config_path, free_port(), d.sock, [])
        d2.wait_ready()
        w = d2.workload("chatty")
        assert (w["state"], w["pid"], w["adopted"]) == ("ready", pid, True), w
        # the relay took the new vramd's connection: its log fd is gone, the socket is its stdout
        def handed_over():
            fds = [os.readlink(f"/proc/{relay}/fd/{n}") for n in os.listdir(f"/proc/{relay}/fd")]
            return not any(f.endswith("chatty.log") for f in fds) and \
                any(f.startswith("socket:") for f in fds)
        wait_for(handed_over, 5, what="the relay to hand the log over")
        n = len(ticks(read(path)))
        wait_for(lambda: len(ticks(read(path))) >= n + 10, what="ticks through the new vramd")
        text = read(path)
        assert text.count(GONE_NOTE) == 1, text[-2000:]
        after = text.split(GONE_NOTE)[1]
        t = ticks(after)
        # from the relay's first line on: each tick once, in order, no gap across the handover
        assert t == list(range(t[0], t[0] + len(t))), t
        # the new vramd's note about the process it took back comes after the relay's lines
        assert "taken back from the previous vramd" in after, after[-2000:]
        assert pid_alive(relay)
    finally:
        if d2 is not None and d2.proc.poll() is None:
            d2.stop()
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
