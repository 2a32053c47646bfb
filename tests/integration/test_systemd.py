# SPDX-License-Identifier: MIT
"""vramd under systemd: the real vramd with a NOTIFY_SOCKET of the test's own
says READY=1 (with STATUS) once it serves, RELOADING=1 then READY=1 around
`vramctl reload` and SIGHUP, READY=1 again after a restart in place (same
pid), and STOPPING=1 at SIGTERM; with stderr the journal (JOURNAL_STREAM),
its lines carry a syslog priority and no timestamp; and the unit file passes
`systemd-analyze verify`."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import DEMO, SOURCE, VRAMD, free_port, wait_for
from test_gateway import config


class Manager:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.addr = f"@vramd-it-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + self.addr[1:])
        else:
            self.dir = tempfile.mkdtemp(prefix="vramd-nt-")
            self.addr = os.path.join(self.dir, "notify")
            self.sock.bind(self.addr)
        self.messages = []

    def drain(self):
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1)
                                      for line in data.decode().splitlines() if "=" in line))

    def wait(self, pred, what, timeout=15):
        def found():
            self.drain()
            return any(pred(m) for m in self.messages)
        wait_for(found, timeout, what=what)
        return next(m for m in self.messages if pred(m))

    def close(self):
        self.sock.close()
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_reload_stopping(daemon, monkeypatch, abstract):
    mgr = Manager(abstract)
    monkeypatch.setenv("NOTIFY_SOCKET", mgr.addr)
    try:
        d = daemon(config({"name": "a"}))
        ready = mgr.wait(lambda m: m.get("READY") == "1", "READY=1")
        assert "Ready with 1 workload" in ready["STATUS"] and str(d.port) in ready["STATUS"]
        # READY comes only once it serves: /healthz answers by then
        assert d.get("/healthz").status_code == 200
        assert len([m for m in mgr.messages if m.get("READY")]) == 1

        # vramctl reload: RELOADING=1 with the monotonic clock, then READY=1
        mgr.messages.clear()
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        d.ctl("reload", check=0)
        mgr.wait(lambda m: m.get("READY") == "1", "READY=1 after reload")
        kinds = [("RELOADING" in m, "READY" in m) for m in mgr.messages]
        assert kinds == [(True, False), (False, True)], mgr.messages
        reloading, done = mgr.messages
        usec = int(reloading["MONOTONIC_USEC"])
        assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert "Config reloaded" in done["STATUS"]

        # a refused reload (bad file) still ends in READY=1: vramd runs on
        mgr.messages.clear()
        with open(d.config_path, "a") as f:
            f.write("  b:\n    cmd: [x]\n    memory: lots\n")
        d.proc.send_signal(signal.SIGHUP)
        mgr.wait(lambda m: m.get("READY") == "1", "READY=1 after a refused reload")
        assert "RELOADING" in mgr.messages[0]
        assert "refused" in mgr.messages[-1]["STATUS"]

        # SIGTERM: STOPPING=1 with a STATUS, then vramd exits 0
        mgr.messages.clear()
        assert d.stop() == 0
        stopping = mgr.wait(lambda m: m.get("STOPPING") == "1", "STOPPING=1", timeout=2)
        assert "Stopping 1 workload" in stopping["STATUS"]
    finally:
        mgr.close()


def test_workloads_do_not_inherit_the_service_managers_variables(daemon, monkeypatch):
    """NOTIFY_SOCKET and the rest were said to vramd: a workload that speaks
    sd_notify must not report READY or STOPPING in its name."""
    mgr = Manager()
    monkeypatch.setenv("NOTIFY_SOCKET", mgr.addr)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    try:
        d = daemon(config({"name": "a"}))
        d.ctl("start", "a", check=0)
        pid = d.workload("a")["pid"]
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        names = {e.split(b"=", 1)[0] for e in env if e}
        assert not names & {b"NOTIFY_SOCKET", b"JOURNAL_STREAM", b"WATCHDOG_USEC"}, names
        assert b"PORT" in names and b"PATH" in names  # the rest of the environment is there
    finally:
        mgr.close()


def test_restart_in_place_says_ready_again(daemon, monkeypatch):
    mgr = Manager()
    monkeypatch.setenv("NOTIFY_SOCKET", mgr.addr)
    try:
        d = daemon(config({"name": "a"}))
        mgr.wait(lambda m: m.get("READY") == "1", "READY=1")
        mgr.messages.clear()
        pid = d.proc.pid
        d.proc.send_signal(signal.SIGUSR2)
        # the new image kept NOTIFY_SOCKET and says READY again, same pid
        ready = mgr.wait(lambda m: m.get("READY") == "1", "READY=1 after SIGUSR2", timeout=30)
        assert "restarted in place" in ready["STATUS"]
        assert d.proc.poll() is None and d.proc.pid == pid
        assert d.get("/healthz").status_code == 200
    finally:
        mgr.close()


def test_journal_stream_lines(tmp_path):
    """stderr is the journal: `<N>message`, no timestamp; journald adds its own."""
    cfg = tmp_path / "vramd.yaml"
    cfg.write_text(config({"name": "a"}).replace("{demo}", DEMO))
    port = free_port()
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        env.pop("NOTIFY_SOCKET", None)
        proc = subprocess.Popen(
            [VRAMD, "--config", str(cfg), "--listen", f"127.0.0.1:{port}",
             "--state-dir", str(tmp_path / "state"), "--gpus", "1x80GiB"],
            stdout=err, stderr=err, env=env, start_new_session=True)
        try:
            wait_for(lambda: b"ready with" in err_path.read_bytes() or proc.poll() is not None,
                     15, what="vramd ready")
            assert proc.poll() is None, err_path.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
    lines = err_path.read_text().splitlines()
    assert lines
    for line in lines:
        assert re.match(r"<[3467]>", line), line
        assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line), line
    assert any(re.fullmatch(r"<6>vramd \S+ ready with 1 workload", l) for l in lines), lines
    assert any(l.startswith("<7>") for l in lines)  # log_level: debug


def test_unit_file_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    unit = open(os.path.join(SOURCE, "packaging", "vramd.service")).read()
    assert "\nType=notify\n" in unit and "\nKillMode=process\n" in unit
    assert "ExecStart=@BINDIR@/vramd\n" in unit  # meson fills the install's bindir
    # verify checks that ExecStart exists: the built binary stands in for the installed one
    (tmp_path / "vramd.service").write_text(
        unit.replace("ExecStart=@BINDIR@/vramd", f"ExecStart={os.path.abspath(VRAMD)}"))
    r = subprocess.run([analyze, "verify", str(tmp_path / "vramd.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # verify warns (and still exits 0) about unknown or misspelt settings
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "vramd.service" in l]
    assert not problems, problems
