# SPDX-License-Identifier: MIT
"""What vramctl shows a user: one result line per action on stdout and
messages on stderr, a progress line on a terminal, the log tail of a failed
start, a fallback placement, sizes that need a unit."""
import os
import pty
import re
import select
import subprocess

from conftest import VRAMCTL, VRAMD, DEFAULT_CONFIG


def test_gpus_needs_a_unit(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DEFAULT_CONFIG.replace("{demo}", "/bin/true"))
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80"], capture_output=True, text=True)
    assert r.returncode != 0, r
    assert 'a GPU size needs a unit: --gpus 2x80GiB, not "2x80"' in r.stderr
    assert r.stdout == ""
    r = subprocess.run([VRAMD, "--check-config", str(cfg), "--gpus", "1x24GiB,80"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert 'a GPU size needs a unit: --gpus 1x24GiB,80GiB, not "1x24GiB,80"' in r.stderr + r.stdout
    # with units it is what it was
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# the default chat and embed, and three that show what vramctl says of a start
CLI_CONFIG = DEFAULT_CONFIG + """
  slow:
    cmd: [{demo}, --port, "${PORT}", --model, slow, --memory, 4GiB, --load-time, 1500ms]
    gpus: 1
    memory: 4GiB
    health: /health
  wide:
    cmd: [{demo}, --port, "${PORT}", --model, wide, --memory, 10GiB]
    gpus: 2
    memory: 10GiB
    fallback: share
    health: /health
  broken:
    cmd: [sh, -c, "echo loading weights; echo 'Traceback (most recent call last):'; echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'; exit 1"]
    gpus: 0
    health: { tcp: true }
    restart: never
"""


def test_one_result_line_per_action(daemon):
    d = daemon(CLI_CONFIG)
    r = d.ctl("start", "chat", check=0)
    assert re.fullmatch(r"chat: started in \d+\.\d\d s\n", r.stdout), r.stdout
    assert r.stderr == ""  # not the same result again in other words
    # already ready: said so, not "started in 0.00 s"
    r = d.ctl("start", "chat", check=0)
    assert r.stdout == "chat: already ready\n" and r.stderr == "", r
    r = d.ctl("offload", "chat", check=0)
    assert re.fullmatch(r"chat: offloaded in \d+\.\d\d s \(20GiB\) via sim\n", r.stdout), r.stdout
    assert r.stderr == ""
    r = d.ctl("offload", "chat", check=0)
    assert r.stdout == "chat: already offloaded\n"
    r = d.ctl("timeout", "chat", "never", check=0)
    assert r.stdout == "chat: no release when idle\n", r.stdout
    r = d.ctl("timeout", "chat", "never", "--offload", check=0)
    assert r.stdout == "chat: no offload when idle\n", r.stdout
    r = d.ctl("timeout", "chat", "90s", check=0)
    assert r.stdout == "chat: release after 1m30s idle\n", r.stdout


def test_stopped_workload_shows_no_gpu(daemon):
    d = daemon(CLI_CONFIG)
    d.ctl("start", "chat", check=0)
    assert len(d.workload("chat")["gpus"]) == 1
    d.ctl("stop", "chat", check=0)
    w = d.workload("chat")
    assert w["state"] == "stopped" and w["gpus"] == [], w
    assert all(i["gpus"] == [] for i in w["instances"]), w
    row = [l for l in d.ctl("status", check=0).stdout.splitlines() if l.startswith("chat ")][0]
    assert re.match(r"^chat\s+stopped\s+-\s", row), row


def test_failed_start_shows_the_end_of_the_log(daemon):
    d = daemon(CLI_CONFIG)
    r = d.ctl("start", "broken", check=1)
    assert r.stdout == ""
    assert "vramctl: start broken:" in r.stderr
    assert "broken: the end of its log:\n" in r.stderr, r.stderr
    assert "    torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n" in r.stderr
    assert "    Traceback (most recent call last):\n" in r.stderr


def test_fallback_placement_is_shown(daemon):
    d = daemon(CLI_CONFIG, gpus="1x80GiB")
    r = d.ctl("start", "wide", check=0)
    assert re.fullmatch(r"wide: started in \d+\.\d\d s\n", r.stdout), r.stdout
    assert re.search(r"^wide: placed by its fallback, not as asked: fallback share: only 1 GPU here; on GPU0 as 1 GPU x 20GiB$",
                     r.stderr, re.M), r.stderr
    assert "fallback share" in d.workload("wide")["placement_note"]
    assert d.workload("wide")["placement_fallback"] is True
    # one that fits as asked says nothing of it
    r = d.ctl("start", "chat", check=0)
    assert r.stderr == ""
    assert d.workload("chat")["placement_note"] is None
    assert d.workload("chat")["placement_fallback"] is False


def run_on_terminal(args, timeout=60):
    """vramctl with stderr on a pseudo-terminal: (returncode, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm")
    p = subprocess.Popen([VRAMCTL] + args, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    got = b""
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            p.kill()
            raise AssertionError(f"no output within {timeout} s: {got!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        got += chunk
    out = p.stdout.read().decode()
    p.wait(timeout)
    os.close(master)
    return p.returncode, out, got.decode()


def test_progress_line_on_a_terminal(daemon):
    d = daemon(CLI_CONFIG)
    rc, out, term = run_on_terminal(["--url", d.sock, "start", "slow"])
    assert rc == 0, term
    assert re.fullmatch(r"slow: started in \d+\.\d\d s\n", out), out
    # the line is redrawn in place: carriage return, erase, "NAME: STATE, SECONDS s"
    frames = [f for f in term.split("\r\x1b[K") if f]
    assert any(re.fullmatch(r"slow: starting \(start asked\), 1\.\d s", f) for f in frames), \
        frames  # 1.5 s load
    seconds = [float(m.group(1)) for f in frames for m in [re.search(r", (\d+\.\d) s$", f)] if m]
    assert seconds == sorted(seconds) and len(seconds) >= 5, frames
    assert term.endswith("\r\x1b[K")  # erased: the terminal keeps the result only
    # Over HTTP too.
    d.ctl("stop", "slow", check=0)
    rc, out, term = run_on_terminal(["--url", d.url, "start", "slow"])
    assert rc == 0 and "slow: starting (start asked), " in term
    # --no-wait, or no terminal: nothing of it
    d.ctl("stop", "slow", check=0)
    rc, out, term = run_on_terminal(["--url", d.sock, "start", "--no-wait", "slow"])
    assert rc == 0 and term == "" and out == "slow: start accepted (now starting)\n", (out, term)
    d.wait_state("slow", "ready")
    d.ctl("stop", "slow", check=0)
    r = d.ctl("start", "slow", check=0)
    assert r.stderr == ""
