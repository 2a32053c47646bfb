# SPDX-License-Identifier: MIT
"""HTTP/1.1 at the gateway's front end, byte by byte: pipelining, mixed API
and gateway requests on one connection, Expect: 100-continue, chunked
request bodies, framing passed through or converted (chunked to HTTP/1.0,
close-delimited, interim 1xx), hop-by-hop headers (RFC 9110 §7.6.1) in both
directions, requests refused because they could be read two ways, and the
token on TCP but not on the control socket."""
import json
import os
import resource
import socket
import sys
import time

import pytest

from conftest import wait_for

ECHO = os.path.join(os.path.dirname(__file__), "echo_server.py")

CONFIG = f"""
daemon:
  log_level: debug
{{token}}gpus:
  reserve: 0
defaults:
  idle: {{{{ offload_after: never, release_after: never }}}}
  stop_grace: 3s
workloads:
  echo:
    cmd: [{sys.executable}, {ECHO}, "${{{{PORT}}}}"]
    gpus: 1
    memory: 1GiB
    models: [echo-model]
    health: {{{{ tcp: true }}}}
"""


def config(token=None):
    return CONFIG.format(token=f"  token: {token}\n" if token else "")


def connect(d):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    return s


class Reader:
    """Reads HTTP/1.1 responses off a socket."""

    def __init__(self, s):
        self.s, self.buf = s, b""

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        return status, headers

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def response(self, head_request=False):
        """(status, headers, body); the body de-chunked."""
        while True:
            status, h = self.head()
            if status >= 200:
                break
        if head_request:
            return status, h, b""
        if "transfer-encoding" in h:
            assert h["transfer-encoding"] == ["chunked"], h
            body = b""
            while True:
                size = int(self.line().split(b";")[0], 16)
                if size == 0:
                    while self.line() != b"":
                        pass
                    return status, h, body
                body += self.exact(size)
                assert self.exact(2) == b"\r\n"
        if "content-length" in h:
            return status, h, self.exact(int(h["content-length"][0]))
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        body, self.buf = self.buf, b""
        return status, h, body

    def closed(self):
        try:
            self._fill()
        except (EOFError, ConnectionResetError):
            return True
        return False


def request(method, target, headers=(), body=b"", version="1.1"):
    lines = [f"{method} {target} HTTP/{version}", "Host: localhost"] + list(headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def echoed(body):
    return json.loads(body)


def header_names(seen):
    return [k.lower() for k, _ in seen["headers"]]


@pytest.fixture
def echo(daemon):
    d = daemon(config())
    s = connect(d)
    # The first request starts the workload (lazily, through the gateway).
    s.sendall(request("GET", "/w/echo/warm"))
    assert Reader(s).response()[0] == 200
    s.close()
    return d


def test_pipelined_api_and_gateway_on_one_connection(echo):
    s = connect(echo)
    chat = json.dumps({"model": "echo-model", "messages": []}).encode()
    s.sendall(request("GET", "/api/status") + request("GET", "/v1/models") +
              request("POST", "/v1/chat/completions", ["Content-Type: application/json"], chat) +
              request("GET", "/w/echo/x?y=1") + request("GET", "/healthz"))
    r = Reader(s)
    status, _, body = r.response()
    assert status == 200 and "workloads" in json.loads(body)
    status, _, body = r.response()
    assert status == 200 and json.loads(body)["data"][0]["id"] == "echo-model"
    status, _, body = r.response()
    assert status == 200 and echoed(body)["target"] == "/v1/chat/completions"
    assert echoed(body)["body"] == chat.decode()
    status, _, body = r.response()
    assert status == 200 and echoed(body)["target"] == "/x?y=1"
    status, _, _ = r.response()
    assert status == 200
    s.close()


def test_expect_100_continue(echo):
    s = connect(echo)
    body = b'{"model": "echo-model"}'
    s.sendall(request("POST", "/v1/embeddings", ["Expect: 100-continue",
                                                 f"Content-Length: {len(body)}"]))
    r = Reader(s)
    assert r.head()[0] == 100  # before any byte of the body
    s.sendall(body)
    status, _, got = r.response()
    assert status == 200
    seen = echoed(got)
    assert seen["body"] == body.decode() and "expect" not in header_names(seen)


def test_chunked_request_body_is_routed_and_sent_with_a_length(echo):
    s = connect(echo)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: application/json\r\n\r\n"
              b"9\r\n{\"model\":\r\nE;ext=1\r\n \"echo-model\"}\r\n0\r\nX-Trailer: 1\r\n\r\n")
    status, _, got = Reader(s).response()
    assert status == 200
    seen = echoed(got)
    assert seen["body"] == '{"model": "echo-model"}'
    names = header_names(seen)
    assert "transfer-encoding" not in names and ("content-length", "23") in [
        (k.lower(), v) for k, v in seen["headers"]]


def test_framing_passed_through_or_converted(echo):
    s = connect(echo)
    r = Reader(s)
    # Chunked to an HTTP/1.1 client: chunks pass through.
    s.sendall(request("GET", "/w/echo/chunked"))
    status, h, body = r.response()
    assert status == 200 and h["transfer-encoding"] == ["chunked"]
    assert echoed(body)["target"] == "/chunked"
    # An interim 103 from the upstream is not forwarded; the 200 is.
    s.sendall(request("GET", "/w/echo/early"))
    status, h, body = r.response()
    assert status == 200 and echoed(body)["target"] == "/early"
    # HEAD: a length but no body.
    s.sendall(request("HEAD", "/w/echo/x"))
    status, h, _ = r.response(head_request=True)
    assert status == 200 and "content-length" in h
    # Close-delimited from the upstream: the client's connection ends with it.
    s.sendall(request("GET", "/w/echo/close"))
    status, h, body = r.response()
    assert status == 200 and h["connection"] == ["close"]
    assert echoed(body)["target"] == "/close"
    s.close()

    # HTTP/1.0 gets no chunks: the body is decoded and ends with the connection.
    s = connect(echo)
    s.sendall(request("GET", "/w/echo/chunked", version="1.0"))
    r = Reader(s)
    status, h, body = r.response()
    assert status == 200 and "transfer-encoding" not in h and h["connection"] == ["close"]
    assert echoed(body)["target"] == "/chunked"
    # HTTP/1.0 with keep-alive keeps the connection for a length-framed reply.
    s = connect(echo)
    r = Reader(s)
    s.sendall(request("GET", "/w/echo/a", ["Connection: keep-alive"], version="1.0"))
    status, h, body = r.response()
    assert status == 200 and h["connection"] == ["keep-alive"]
    s.sendall(request("GET", "/w/echo/b", version="1.0"))
    assert echoed(r.response()[2])["target"] == "/b"
    assert r.closed()


def test_hop_by_hop_headers_stop_at_the_gateway(echo):
    s = connect(echo)
    s.sendall(request("GET", "/w/echo/hop", ["Connection: keep-alive, X-Private", "X-Private: 1",
                                            "Keep-Alive: timeout=9", "TE: trailers",
                                            "Upgrade: websocket", "X-Kept: 2",
                                            "X-Forwarded-For: 10.0.0.1", "Via: 1.0 edge"]))
    status, h, body = Reader(s).response()
    assert status == 200
    seen = dict((k.lower(), v) for k, v in echoed(body)["headers"])
    for gone in ("connection", "x-private", "keep-alive", "te", "upgrade"):
        assert gone not in seen, seen
    assert seen["x-kept"] == "2"
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["via"] == "1.0 edge, 1.1 vramd"
    # And the upstream's own: Connection-listed, Keep-Alive, Proxy-Connection.
    for gone in ("x-secret", "keep-alive", "proxy-connection"):
        assert gone not in h, h
    assert h["via"] == ["1.1 vramd"]


@pytest.mark.parametrize("raw,status", [
    (b"POST /v1/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    (b"POST /w/echo/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"GET /w/echo/ HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    (b"GET /w/echo/ HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n", 400),
    (b"GET /api/status HTTP/2.0\r\n\r\n", 505),
    (b"GET /w/echo/ HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /w/echo/ HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
    (b"GET nopath HTTP/1.1\r\n\r\n", 400),
])
def test_requests_that_could_be_read_two_ways_are_refused(echo, raw, status):
    s = connect(echo)
    s.sendall(raw)
    r = Reader(s)
    got, h, body = r.response()
    assert got == status, body
    assert h["connection"] == ["close"]
    assert json.loads(body)["error"]["message"]
    assert r.closed()
    # Nothing reached the workload, and the gateway still serves.
    s = connect(echo)
    s.sendall(request("GET", "/w/echo/after"))
    assert Reader(s).response()[0] == 200


def test_token_on_tcp_not_on_the_control_socket(daemon):
    d = daemon(config(token="s3cret"), wait=False)
    wait_for(lambda: os.path.exists(d.sock), 10, what="the control socket")
    wait_for(lambda: d.get("/api/status").status_code == 401, 10, what="vramd to answer")
    for target in ("/w/echo/x", "/v1/models", "/api/status", "/metrics"):
        s = connect(d)
        s.sendall(request("GET", target))
        status, h, body = Reader(s).response()
        assert status == 401, target
        assert h["www-authenticate"] == ["Bearer"]
        s = connect(d)
        s.sendall(request("GET", target, ["Authorization: Bearer s3cret"]))
        assert Reader(s).response()[0] == 200, target
    u = socket.socket(socket.AF_UNIX)
    u.connect(d.sock)
    u.sendall(request("GET", "/v1/models") + request("GET", "/api/status"))
    r = Reader(u)
    assert r.response()[0] == 200
    assert r.response()[0] == 200


def test_upstream_connections_are_kept_for_the_peak_of_requests(echo):
    """100 requests in flight at once, twice: the second round reuses the
    connections of the first (a pool capped below the peak closed and
    reopened connections on every request)."""
    n = 100

    def round_of_peers():
        socks = [connect(echo) for _ in range(n)]
        for s in socks:
            s.sendall(request("GET", "/w/echo/slow"))
        peers = set()
        for s in socks:
            status, _, body = Reader(s).response()
            assert status == 200, body
            peers.add(echoed(body)["peer"])
            s.close()
        return peers

    first = round_of_peers()
    assert len(first) == n  # all in flight together: one connection each
    second = round_of_peers()
    assert second <= first, f"{len(second - first)} new upstream connections"


def test_idle_upstream_connections_are_closed(echo):
    """An upstream connection unused for 30 s is closed by the gateway (the
    sweep runs every second), so the next request opens a new one."""
    s = connect(echo)
    r = Reader(s)
    s.sendall(request("GET", "/w/echo/a"))
    status, _, body = r.response()
    assert status == 200
    before = echoed(body)["peer"]
    s.sendall(request("GET", "/w/echo/b"))
    assert echoed(r.response()[2])["peer"] == before  # kept alive and reused
    s.close()
    time.sleep(32.5)
    s = connect(echo)
    s.sendall(request("GET", "/w/echo/c"))
    status, _, body = Reader(s).response()
    assert status == 200
    assert echoed(body)["peer"] != before
    s.close()


def test_upstream_connection_outlives_offload_and_restore(daemon):
    """An offload and a restore keep the process and its port, so the
    request after the restore goes over the connection used before it: a
    server that gives each connection its own thread serves it on a warm
    thread (a new thread's first request cost transformers 0.6 s more)."""
    d = daemon(config().replace("    health: { tcp: true }\n", "    health: { tcp: true }\n    offload: sim\n"))
    s = connect(d)
    r = Reader(s)
    s.sendall(request("GET", "/w/echo/a"))
    status, _, body = r.response()
    assert status == 200
    before = echoed(body)["peer"]
    for act, state in (("offload", "offloaded"), ("restore", "ready")):
        assert d.post(f"/api/workloads/echo/{act}", timeout=10).status_code == 200
        d.wait_state("echo", state, timeout=10)
    s.sendall(request("GET", "/w/echo/b"))
    status, _, body = r.response()
    assert status == 200
    assert echoed(body)["peer"] == before, "a new upstream connection after the restore"
    # A stop changes the process: its connections go.
    assert d.post("/api/workloads/echo/stop", timeout=10).status_code == 200
    d.wait_state("echo", "stopped", timeout=10)
    s.sendall(request("GET", "/w/echo/c"))
    status, _, body = r.response()
    assert status == 200
    assert echoed(body)["peer"] != before
    s.close()


def test_out_of_descriptors_pauses_accepting_instead_of_spinning(echo):
    """With its descriptors used up, vramd neither spins on the listening
    socket nor floods its log: one warning, little CPU, and the connections
    that waited in the backlog are served once descriptors are free."""
    pid = echo.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 4, in_use + 4))

    def cpu_s():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    socks = [connect(echo) for _ in range(20)]  # the backlog takes them all
    before = cpu_s()
    time.sleep(2)
    spent = cpu_s() - before
    log = echo.log_text()
    assert log.count("accepting a connection failed") == 1, log[-2000:]
    assert "Too many open files" in log
    assert spent < 0.5, f"{spent:.2f} s of CPU in 2 s"
    for s in socks[:-1]:
        s.close()
    # the listeners come back: the connection that waited longest is served
    last = socks[-1]
    last.sendall(request("GET", "/healthz"))
    assert Reader(last).response()[0] == 200
    last.close()
