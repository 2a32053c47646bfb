# SPDX-License-Identifier: MIT
"""Port ownership against the real vramd: a process that holds a workload's
port (a fixed one taken before the workload starts, or an auto one taken in
the moment between vramd choosing it and the workload binding it) answers the
health probe, yet the workload never becomes ready: it fails naming that
process, and no request, and so no token, is ever sent to it."""
import os
import subprocess
import sys
import threading
import time

from conftest import free_port, wait_for

TOKEN = "s3cret-token-for-the-squatter-test"

# A squatter: answers every request with 200 and writes what it got to a file.
SQUATTER = r"""
import socket, sys
port, log = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(16)
open(log + ".ready", "w").close()
while True:
    c, _ = s.accept()
    c.settimeout(2)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            b = c.recv(4096)
            if not b:
                break
            data += b
        with open(log, "ab") as f:
            f.write(data + b"\n--\n")
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except OSError:
        pass
    c.close()
"""


class Squatter:
    def __init__(self, workdir, port):
        self.port = port
        self.log = os.path.join(workdir, f"squatter-{port}.log")
        self.proc = subprocess.Popen([sys.executable, "-c", SQUATTER, str(port), self.log])
        wait_for(lambda: os.path.exists(self.log + ".ready") or self.proc.poll() is not None,
                 timeout=10, what="the squatter to listen")
        assert self.proc.poll() is None, "the squatter could not bind its port"
        with open(f"/proc/{self.proc.pid}/comm") as f:
            self.comm = f.read().strip()

    def received(self):
        try:
            with open(self.log, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def config(port_line, extra_daemon=""):
    # the workload binds late (sleep), as a model server that loads first does
    return f"""
daemon:
  log_level: debug
  token: {TOKEN}
{extra_daemon}gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 2s
workloads:
  a:
    cmd: [sh, -c, 'sleep 3; exec "$0" --port "$PORT" --model a --memory 1GiB', {{demo}}]
    gpus: 1
    memory: 1GiB
    models: [a-model]
    {port_line}
    health: {{ path: /health, start_timeout: 30s }}
    restart: {{ policy: never }}
"""


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def start(daemon, text):
    d = daemon(text, wait=False)
    d.http.headers.update(AUTH)  # every call of the test's session carries the token
    d.wait_ready()
    return d


def chat_in_background(d, results):
    def run():
        try:
            r = d.post("/v1/chat/completions", headers=AUTH, timeout=30,
                       json={"model": "a-model", "messages": [{"role": "user", "content": "hi"}]})
            results.append((r.status_code, r.text))
        except Exception as e:  # noqa: BLE001
            results.append((0, repr(e)))
    t = threading.Thread(target=run)
    t.start()
    return t


def check_failed_by(d, sq, results, t):
    w = wait_for(lambda: (lambda w: w if w["state"] == "failed" else None)(
        d.get("/api/workloads/a", headers=AUTH).json()), timeout=15, what="a to fail")
    uid = os.getuid()
    assert w["last_error"] == (f"port {sq.port} is held by {sq.comm} (pid {sq.proc.pid}, "
                               f"uid {uid}), not by workload a"), w
    t.join(30)
    # the request that woke it gets the failure, not the squatter's answer
    assert results and results[0][0] >= 500, results
    assert f"pid {sq.proc.pid}" in results[0][1], results
    log = d.log_text()
    assert "a: starting -> ready" not in log
    assert f"a: starting -> failed: port {sq.port} is held by" in log
    # the squatter got health probes and nothing else: no request, no token
    got = sq.received()
    assert b"GET /health HTTP/1.1" in got and b"vramd-health" in got, got
    assert TOKEN.encode() not in got and b"/v1/" not in got, got
    assert got.count(b"--\n") == got.count(b"GET /health "), got
    logs = d.get("/api/workloads/a/logs", headers=AUTH).text
    assert f"held by {sq.comm} (pid {sq.proc.pid}" in logs, logs
    return w


def test_squatter_on_a_fixed_port(daemon):
    port = free_port()
    d = start(daemon, config(f"port: {port}"))
    sq = Squatter(d.workdir, port)
    try:
        results = []
        t = chat_in_background(d, results)
        check_failed_by(d, sq, results, t)
        # the workload's own process did not live on
        st = d.workload("a")
        assert st["pid"] is None and st["instances"][0]["healthy"] is False
    finally:
        sq.stop()


def test_squatter_on_an_auto_port_before_the_workload_binds(daemon):
    first = 30000 + (os.getpid() * 7) % 20000
    d = start(daemon, config("port: auto", extra_daemon=f"  port_range_start: {first}\n"))
    results = []
    t = chat_in_background(d, results)
    # vramd chose a free port and passed it on; the workload sleeps before it binds it
    port = wait_for(lambda: d.workload("a")["port"], timeout=10, interval=0.01,
                    what="a port for a")
    sq = Squatter(d.workdir, port)
    try:
        check_failed_by(d, sq, results, t)
        # started again, it gets a port that is free then, and serves from there
        r = d.post("/api/workloads/a/start", timeout=30)
        assert r.status_code == 200, r.text
        w = d.workload("a")
        assert w["state"] == "ready" and w["port"] != port, w
        r = d.post("/v1/chat/completions", timeout=30,
                   json={"model": "a-model", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        assert TOKEN.encode() not in sq.received()
    finally:
        sq.stop()


def test_port_owner_any_accepts_a_proxy(daemon):
    # port_owner: any is for a workload whose port is held by a proxy (docker-proxy): the
    # squatter is then taken for the workload, as before the check existed
    port = free_port()
    text = config(f"port: {port}").replace(
        "health: { path: /health, start_timeout: 30s }",
        "health: { path: /health, start_timeout: 30s, port_owner: any }")
    d = start(daemon, text)
    sq = Squatter(d.workdir, port)
    try:
        r = d.post("/api/workloads/a/start", timeout=30)
        assert r.status_code == 200, r.text
        assert d.workload("a")["state"] == "ready"
    finally:
        sq.stop()
        d.post("/api/workloads/a/stop", timeout=30)


def test_a_workload_without_a_probe_checks_at_its_first_request(daemon):
    # health: none (as ad-hoc workloads have) is ready at spawn, before anything could look at
    # its port: the first request checks who listens there, and a squatter gets nothing
    port = free_port()
    text = config(f"port: {port}").replace("health: { path: /health, start_timeout: 30s }",
                                           "health: none")
    d = start(daemon, text)
    sq = Squatter(d.workdir, port)
    try:
        r = d.post("/api/workloads/a/start", timeout=30)
        assert r.status_code == 200, r.text
        assert d.workload("a")["state"] == "ready"
        r = d.post("/w/a/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"model": "a-model", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code >= 500, r.text
        w = wait_for(lambda: (lambda w: w if w["state"] == "failed" else None)(
            d.workload("a")), timeout=15, what="a to fail")
        assert w["last_error"].startswith(f"port {port} is held by {sq.comm} (pid {sq.proc.pid}"), w
        assert sq.received() == b"", sq.received()
        assert "the request is not sent" in d.log_text()
    finally:
        sq.stop()
