# SPDX-License-Identifier: MIT
"""Restart in place (vramctl daemon restart, POST /api/daemon/restart,
SIGUSR2): vramd executes the binary on disk in its own process, hands its
listening sockets to the new image and drains what is in flight first.

Under load (wrk through the gateway) no connection is refused, reset or
timed out and every answer is a 2xx; the pid stays; the control socket is
the same file. A stream in flight finishes, an idle keep-alive connection
is closed, a request sent on a kept-alive connection during the drain is
answered with "Connection: close"; what outlasts daemon.upgrade_drain gets
503 "restarting". A config that fails the binary's check, or a binary that
cannot be executed, leaves vramd serving with its pid. A bad
VRAMD_LISTEN_FDS at start is said in one line and vramd binds as usual;
workloads never see the variable.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import conftest
from conftest import pid_alive, wait_for
from test_gateway_http import CONFIG as GATEWAY_HTTP_CONFIG, Reader, request

DEMO_CONFIG = """
daemon:
  log_level: debug
{extra}gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  demo:
    cmd: [{demo}, --port, "${{PORT}}", --model, demo, --memory, 1GiB, --load-time, 50ms]
    gpus: 1
    memory: 1GiB
    health: /health
"""

def demo_config(extra=""):
    return DEMO_CONFIG.format(extra=extra, demo="{demo}")


def echo_config(extra=""):
    """The echo workload of the gateway's HTTP tests; extra: lines for daemon:."""
    return GATEWAY_HTTP_CONFIG.format(token=extra)


RESTARTED = re.compile(r"vramd (\S+) restarted in place \(pid (\d+), restart (\d+); "
                       r"listening on the sockets handed over: ([^)]*\)(?:, [^)]*\))*)\)")


def wait_restarted(d, count=1, timeout=30):
    """The log line of the count-th restart in place: (version, pid, listeners text)."""
    def seen():
        found = RESTARTED.findall(d.log_text())
        return found[count - 1] if len(found) >= count else None
    version, pid, n, handed = wait_for(seen, timeout, what=f"restart {count} in the log")
    assert int(n) == count
    return version, int(pid), handed


def restart_state(d):
    r = d.sock_request("GET", "/api/daemon/restart")
    assert r.status_code == 200, r.text
    return r.json()


def assert_kept(d, old_pids):
    """Every process of the image before is taken back by the new one: a restart in
    place never stops a workload."""
    current = set()
    for w in d.status()["workloads"]:
        current.update(conftest.pids_of(w))
    assert set(old_pids) <= current, (old_pids, current, d.log_text()[-3000:])
    assert all(pid_alive(p) for p in old_pids)


# ------------------------------------------------------------------ load

def run_wrk(url, seconds=6):
    if not shutil.which("wrk"):
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(p):
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, out
    # wrk prints these lines only when there is something to count
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return out, (tuple(int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)), \
        (int(non2xx.group(1)) if non2xx else 0)


def load_and_restart(daemon, how):
    d = daemon(demo_config())
    r = d.get("/w/demo/health")  # starts the workload
    assert r.status_code == 200, r.text
    old_pids = conftest.pids_of(d.workload("demo"))
    sock_inode = os.stat(d.sock).st_ino
    wrk = run_wrk(d.url + "/w/demo/health")
    time.sleep(2)
    ctl = None
    if how == "signal":
        d.proc.send_signal(signal.SIGUSR2)
    else:
        ctl = d.ctl("daemon", "restart")
    out, errors, non2xx = wrk_result(wrk)
    try:
        assert errors == (0, 0, 0, 0), f"socket errors (connect, read, write, timeout):\n{out}"
        assert non2xx == 0, out
        if ctl is not None:
            assert ctl.returncode == 0, ctl.stderr
            assert re.match(rf"vramd restarted in place: pid {d.proc.pid}, version \S+ "
                            rf"\(was \S+\), restart 1\n", ctl.stdout), ctl.stdout
        version, pid, handed = wait_restarted(d)
        assert pid == d.proc.pid and d.proc.poll() is None
        asked = "SIGUSR2" if how == "signal" else r"uid \d+ \(pid \d+\) on the control socket"
        assert re.search(rf"Restart in place \(asked by {asked}\): executing ", d.log_text()), \
            d.log_text()
        st = restart_state(d)
        assert st["pid"] == d.proc.pid and st["restarts"] == 1 and st["version"] == version
        assert st["restarting"] is False and st["failed"] is False
        # handed over, not bound anew: the same socket file, every listener
        assert os.stat(d.sock).st_ino == sock_inode
        assert f"tcp 127.0.0.1:{d.port} (fd " in handed
        assert f"control {d.sock} (fd " in handed and f"api {d.sock}.api (fd " in handed
    finally:
        assert_kept(d, old_pids)


def test_upgrade_under_load_with_sigusr2(daemon):
    load_and_restart(daemon, "signal")


def test_upgrade_under_load_with_vramctl(daemon):
    load_and_restart(daemon, "vramctl")


def test_upgrade_keeps_the_workloads_processes(daemon):
    d = daemon(demo_config())
    d.ctl("start", "demo", check=0)
    before = d.workload("demo")
    old_pids = conftest.pids_of(before)
    assert old_pids
    try:
        d.ctl("daemon", "restart", check=0)
        wait_restarted(d)
        after = d.workload("demo")
        assert after["state"] == "ready"
        assert conftest.pids_of(after) == old_pids
        assert all(pid_alive(p) for p in old_pids)
    finally:
        assert_kept(d, old_pids)


# ----------------------------------------------------------------- drain

def test_drain_finishes_streams_answers_with_close_and_closes_idle(daemon):
    d = daemon(echo_config())
    warm = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    warm.sendall(request("GET", "/w/echo/warm"))
    assert Reader(warm).response()[0] == 200
    old_pids = conftest.pids_of(d.workload("echo"))
    try:
        # A: a stream in flight (three chunks, 1.5 s apart); B: an idle kept-alive
        # connection; C: a kept-alive connection on the control socket
        a = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        a.sendall(request("GET", "/w/echo/drip"))
        ra = Reader(a)
        status, ha = ra.head()
        assert status == 200 and ha["transfer-encoding"] == ["chunked"]
        assert int(ra.line(), 16) == 2 and ra.exact(4) == b"0\n\r\n"
        b = warm
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(d.sock)
        c.sendall(request("GET", "/healthz"))
        rc = Reader(c)
        status, hc, _ = rc.response()
        assert status == 200 and "connection" not in hc

        r = d.sock_request("POST", "/api/daemon/restart")
        assert r.status_code == 202, r.text
        assert r.json()["restarting"] is True and r.json()["pid"] == d.proc.pid
        assert r.headers.get("Connection") == "close"
        # a request on a kept-alive connection during the drain: answered, and the last
        c.sendall(request("POST", "/api/daemon/restart", ["Content-Type: application/json"]))
        status, hc, body = rc.response()
        assert status == 409, body
        assert json.loads(body)["error"]["code"] == "restarting"
        assert hc["connection"] == ["close"]
        assert rc.closed()
        d.proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "SIGUSR2 ignored: a restart in place asked by uid" in d.log_text(), 5,
                 what="the second restart refused")

        # the idle connection is closed at once (its grace, not the stream's time)
        b.settimeout(2)
        assert Reader(b).closed()
        assert "executing" not in d.log_text()

        # the stream goes on to its end, and only then is the binary executed
        for i in (1, 2):
            assert int(ra.line(), 16) == 2 and ra.exact(4) == b"%d\n\r\n" % i
        assert ra.line() == b"0" and ra.line() == b""
        assert "executing" not in d.log_text()
        # its connection was kept alive: the next request is answered, with close
        a.sendall(request("GET", "/w/echo/after"))
        status, ha, body = ra.response()
        assert status == 200 and ha["connection"] == ["close"]
        assert json.loads(body)["target"] == "/after"
        assert ra.closed()
        wait_restarted(d)
        assert d.get("/healthz").status_code == 200
        assert restart_state(d)["pid"] == d.proc.pid
    finally:
        assert_kept(d, old_pids)


def test_drain_time_up_answers_503_restarting(daemon):
    d = daemon(echo_config(extra="  upgrade_drain: 1s\n"))
    s = socket.create_connection(("127.0.0.1", d.port), timeout=15)
    s.sendall(request("GET", "/w/echo/warm"))
    rs = Reader(s)
    assert rs.response()[0] == 200
    old_pids = conftest.pids_of(d.workload("echo"))
    try:
        s.sendall(request("GET", "/w/echo/silent"))  # answers after 30 s
        time.sleep(0.3)
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGUSR2)
        status, h, body = rs.response()
        waited = time.monotonic() - t0
        assert status == 503, body
        err = json.loads(body)["error"]
        assert err["code"] == "restarting" and "daemon.upgrade_drain" in err["message"]
        assert h["retry-after"] == ["1"] and h["connection"] == ["close"]
        assert 0.9 < waited < 5, waited
        wait_restarted(d)
        assert "still busy after 1.0 s (daemon.upgrade_drain)" in d.log_text()
        assert d.get("/healthz").status_code == 200
    finally:
        assert_kept(d, old_pids)


# -------------------------------------------------------------- refusals

def test_check_failure_is_answered_and_vramd_runs_on(daemon):
    d = daemon(demo_config())
    with open(d.config_path, "a") as f:
        f.write("bogus_key: 1\n")
    r = d.sock_request("POST", "/api/daemon/restart")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "check_failed"
    assert "--check-config" in err["message"] and "unknown key 'bogus_key'" in err["message"]
    assert "vramd runs on unchanged" in err["message"]
    ctl = d.ctl("daemon", "restart")
    assert ctl.returncode == 1
    assert "unknown key 'bogus_key'" in ctl.stderr, ctl.stderr
    st = restart_state(d)
    assert st["restarts"] == 0 and st["failed"] is True and st["phase"] == "idle"
    assert "unknown key 'bogus_key'" in st["last_error"]
    # SIGUSR2: the same, in the log
    d.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: d.log_text().count("Restart in place (asked by SIGUSR2) failed: ") == 1, 10,
             what="the signal's failure in the log")
    assert d.proc.poll() is None and "restarted in place" not in d.log_text()
    assert d.get("/healthz").status_code == 200
    assert restart_state(d)["pid"] == d.proc.pid


def test_restart_needs_the_owner_or_the_token(daemon):
    d = daemon(demo_config())
    r = d.post("/api/daemon/restart")
    assert r.status_code == 403, r.text
    assert "only vramd's own user or root on the control socket, or a client with the " \
           "daemon's token, may restart vramd" in r.json()["error"]["message"]
    st = d.get("/api/daemon/restart").json()
    assert st["restarting"] is False and st["last_error"] is None
    token = "t0ken-for-the-restart-test-0123"
    t = daemon(demo_config(extra=f"  token: {token}\n"), wait=False)
    t.http.headers["Authorization"] = f"Bearer {token}"
    t.wait_ready()
    assert t.post("/api/daemon/restart", headers={"Authorization": "Bearer nope"}).status_code \
        == 401
    assert restart_state(t)["restarting"] is False
    r = t.post("/api/daemon/restart")
    assert r.status_code == 202, r.text
    version, pid, _ = wait_restarted(t)
    assert pid == t.proc.pid
    assert "Restart in place asked by TCP client 127.0.0.1 with the token: " in t.log_text()


def copied_binary(monkeypatch, tmp_path):
    """vramd started from a copy of the binary, which the test may then replace."""
    binary = str(tmp_path / "vramd")
    shutil.copy2(conftest.VRAMD, binary)
    monkeypatch.setattr(conftest, "VRAMD", binary)
    return binary


def test_binary_that_takes_no_sockets_over_is_refused(daemon, monkeypatch, tmp_path):
    real = conftest.VRAMD
    binary = copied_binary(monkeypatch, tmp_path)
    d = daemon(demo_config())
    # as a vramd before restarts in place: its check says nothing of the hand-over
    os.unlink(binary)
    with open(binary, "w") as f:
        f.write(f"#!/bin/sh\nunset VRAMD_CHECK_FOR_RESTART\nexec {real} \"$@\"\n")
    os.chmod(binary, 0o755)
    r = d.sock_request("POST", "/api/daemon/restart")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "check_failed"
    assert f"{binary} takes no listening sockets over" in r.json()["error"]["message"]
    assert "stop and start vramd instead" in r.json()["error"]["message"]
    assert "draining" not in d.log_text()
    assert d.get("/healthz").status_code == 200 and d.proc.poll() is None


@pytest.mark.parametrize("mode,why", [(0o644, "Permission denied"), (0o755, "Exec format error")])
def test_exec_failure_is_logged_and_vramd_serves_on(daemon, monkeypatch, tmp_path, mode, why):
    binary = copied_binary(monkeypatch, tmp_path)
    d = daemon(echo_config())
    s = socket.create_connection(("127.0.0.1", d.port), timeout=15)
    s.sendall(request("GET", "/w/echo/warm"))
    rs = Reader(s)
    assert rs.response()[0] == 200
    old_pids = conftest.pids_of(d.workload("echo"))
    # a stream holds the drain while the binary on disk is replaced by a file
    # that cannot be executed: the check passed, the execve fails
    s.sendall(request("GET", "/w/echo/drip"))
    assert rs.head()[0] == 200
    ctl = subprocess.Popen([conftest.VRAMCTL, "--url", d.sock, "daemon", "restart"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: "draining for up to" in d.log_text(), 10, what="the drain")
    # unlinked and written anew, as a package manager puts a new binary in place
    os.unlink(binary)
    with open(binary, "w") as f:
        f.write("not a program\n")
    os.chmod(binary, mode)
    out, err = ctl.communicate(timeout=60)
    assert ctl.returncode == 1, out + err
    assert f"cannot execute {binary}: {why}" in err, err
    assert f"vramd (pid {d.proc.pid}) runs on" in err
    log = d.log_text()
    assert f"failed: cannot execute {binary}: {why}; vramd" in log, log
    assert d.proc.poll() is None and "restarted in place" not in log
    # the stream ended whole, and vramd accepts again, with the same pid
    body = b""
    while True:
        n = int(rs.line(), 16)
        if n == 0:
            break
        body += rs.exact(n)
        rs.exact(2)
    assert body == b"0\n1\n2\n"
    assert d.get("/healthz").status_code == 200
    st = restart_state(d)
    assert st["pid"] == d.proc.pid and st["restarts"] == 0 and st["failed"] is True
    assert why in st["last_error"]
    assert_kept(d, old_pids)


# ------------------------------------------------- the variable at start

WRAPPER = r"""
import os, socket, sys
mode, fd = os.environ.pop("WRAP_MODE"), int(os.environ.pop("WRAP_FD"))
if mode == "file":
    f = os.open(os.environ.pop("WRAP_FILE"), os.O_RDONLY)
elif mode == "socket":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", int(os.environ.pop("WRAP_PORT"))))
    s.listen(8)
    f = s.detach()
if mode != "none":
    os.dup2(f, fd)
    os.close(f)
os.execv(sys.argv[1], sys.argv[1:])
"""


def start_with_variable(daemon, monkeypatch, tmp_path, value, mode="none", fd=50, **wrap):
    """vramd started with VRAMD_LISTEN_FDS=value and, at descriptor fd, a file
    or a listening socket (mode), through a wrapper that opens it and executes
    vramd."""
    wrapper = tmp_path / "wrap.sh"
    script = tmp_path / "wrap.py"
    script.write_text(WRAPPER)
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} {conftest.VRAMD} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "VRAMD", str(wrapper))
    monkeypatch.setenv("VRAMD_LISTEN_FDS", value)
    monkeypatch.setenv("WRAP_MODE", mode)
    monkeypatch.setenv("WRAP_FD", str(fd))
    for k, v in wrap.items():
        monkeypatch.setenv(f"WRAP_{k.upper()}", str(v))
    d = daemon(echo_config())
    return d


def fd_target(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return None


def test_bad_variable_closed_descriptor(daemon, monkeypatch, tmp_path):
    d = start_with_variable(daemon, monkeypatch, tmp_path,
                            f"restarts=1,tcp=50:127.0.0.1:{conftest.free_port()}")
    assert "Ignoring the listeners handed over by a restart in place: VRAMD_LISTEN_FDS: the " \
           "tcp listener 127.0.0.1:" in d.log_text()
    assert ": descriptor 50 is not open; binding them anew" in d.log_text()
    assert "restarted in place" not in d.log_text()
    assert d.get("/healthz").status_code == 200
    assert restart_state(d)["restarts"] == 0


def test_bad_variable_not_a_socket_is_left_alone(daemon, monkeypatch, tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    d = start_with_variable(daemon, monkeypatch, tmp_path, "restarts=1,control=50:/x.sock",
                            mode="file", file=f)
    assert "VRAMD_LISTEN_FDS: the control listener /x.sock: descriptor 50 is a regular file, " \
           "not a socket; binding them anew" in d.log_text()
    assert d.sock_request("GET", "/healthz").status_code == 200
    # not vramd's to close: it stays what it was
    assert fd_target(d.proc.pid, 50) == str(f)


def test_bad_variable_wrong_address_is_closed_and_bound_anew(daemon, monkeypatch, tmp_path):
    other = conftest.free_port()
    # the variable claims the socket at fd 50 listens elsewhere than it does
    d = start_with_variable(daemon, monkeypatch, tmp_path, "restarts=2,tcp=50:127.0.0.1:1",
                            mode="socket", port=other)
    assert f"descriptor 50 is bound to 127.0.0.1:{other}, not 127.0.0.1:1; binding them anew" \
        in d.log_text()
    assert d.get("/healthz").status_code == 200
    # that listener is closed, its port free
    assert fd_target(d.proc.pid, 50) is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", other), timeout=2)
    assert restart_state(d)["restarts"] == 0


def test_bad_variable_that_does_not_parse(daemon, monkeypatch, tmp_path):
    d = start_with_variable(daemon, monkeypatch, tmp_path, "tcp=50")
    assert "VRAMD_LISTEN_FDS=\"tcp=50\": entry 1 (\"tcp=50\"): expected FD:ADDRESS after tcp=; " \
           "binding them anew" in d.log_text()
    assert d.get("/healthz").status_code == 200


def test_variable_never_reaches_workloads(daemon):
    d = daemon(echo_config())
    d.proc.send_signal(signal.SIGUSR2)
    _, _, handed = wait_restarted(d)
    # the workload starts under the new image, which was handed the variable
    r = d.get("/w/echo/env")
    assert r.status_code == 200
    pids = conftest.pids_of(d.workload("echo"))
    assert pids
    for p in pids:
        with open(f"/proc/{p}/environ", "rb") as f:
            env = f.read().split(b"\0")
        assert any(e.startswith(b"PORT=") for e in env)
        assert not any(e.startswith(b"VRAMD_LISTEN_FDS=") for e in env), env
    # the signals it handles, blocked across the execve, are unblocked again
    with open(f"/proc/{d.proc.pid}/status") as f:
        blocked = int(re.search(r"SigBlk:\s+([0-9a-f]+)", f.read()).group(1), 16)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        assert not blocked & (1 << (sig - 1)), (sig, hex(blocked))
    # the sockets handed over are close-on-exec again in the new image
    fds = [int(n) for n in re.findall(r"\(fd (\d+)\)", handed)]
    assert len(fds) == 3
    for fd in fds:
        with open(f"/proc/{d.proc.pid}/fdinfo/{fd}") as f:
            flags = int(re.search(r"flags:\s+(\d+)", f.read()).group(1), 8)
        assert flags & 0o2000000, (fd, oct(flags))
