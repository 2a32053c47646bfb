# SPDX-License-Identifier: MIT
"""The front door, seen from outside: what a web page, a DNS-rebinding page,
a process squatting on a workload's port and a crowd of anonymous TCP
clients can and cannot make vramd do.

- A page elsewhere cannot run a command through POST /api/workloads, with
  any body a browser sends without a preflight; a rebinding page's Host is
  refused on every route; an origin listed in daemon.cors.origins works and
  gets CORS headers and answered preflights.
- The TTS apps' body-less POST /api/gpu/offload still works without a token.
- What listens on a workload's port never sees vramd's token nor the
  identity header; other credentials pass.
- Idle connections give back what large bodies made them hold; the token is
  checked before a body is read; the body budget answers 503 past it.
- 5,000 TCP connections leave vramctl its way in; one address holds at most
  1,024.
- API errors are JSON whatever is sent; a bare LF is refused at once.
- A workload's first-byte timeout is not its stream timeout.
"""
import json
import os
import resource
import select
import socket
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from test_gateway_http import Reader, connect

ECHO = os.path.join(os.path.dirname(__file__), "echo_server.py")
TOKEN = "front-door-token-0123456789"


def config(daemon_extra="", echo_extra=""):
    return f"""
daemon:
  log_level: debug
{daemon_extra}gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  echo:
    cmd: [{sys.executable}, {ECHO}, "${{PORT}}"]
    gpus: 1
    memory: 1GiB
    models: [echo-model]
    health: {{ tcp: true }}
{echo_extra}"""


def curl(*args):
    """(status, body) of the real curl."""
    r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args],
                       capture_output=True, text=True, timeout=30)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


def error_of(status, body, want_status, want_code):
    assert status == want_status, body
    err = json.loads(body)["error"]
    assert err["code"] == want_code, err
    return err["message"]


def raw(d, data, timeout=10):
    """Sends data on a new TCP connection: (status, headers, body, seconds)."""
    s = connect(d)
    s.settimeout(timeout)
    t0 = time.monotonic()
    s.sendall(data)
    status, h, body = Reader(s).response()
    took = time.monotonic() - t0
    s.close()
    return status, h, body, took


def test_a_web_page_cannot_run_commands(daemon):
    d = daemon(config())
    pwned = os.path.join(d.workdir, "pwned")
    body = json.dumps({"name": "x", "cmd": ["sh", "-c", f"id > {pwned}"]})
    url = d.url + "/api/workloads"
    # The bodies a page may send without a preflight (fetch with mode no-cors).
    for ctype in ("text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x"):
        status, text = curl("-X", "POST", url, "-H", f"Content-Type: {ctype}",
                            "-H", "Origin: http://evil.example", "-d", body)
        msg = error_of(status, text, 403, "forbidden_origin")
        assert '"http://evil.example"' in msg and "daemon.cors.origins" in msg
        # Without an Origin (a client that hides it): not JSON, not taken.
        status, text = curl("-X", "POST", url, "-H", f"Content-Type: {ctype}", "-d", body)
        msg = error_of(status, text, 415, "unsupported_media_type")
        assert "application/json" in msg and ctype.split(";")[0] in msg
    # No type at all (a Blob body) is not JSON either.
    status, text = curl("-X", "POST", url, "-H", "Content-Type:", "-d", body)
    error_of(status, text, 415, "unsupported_media_type")
    time.sleep(1)
    assert not os.path.exists(pwned)
    assert [w["name"] for w in d.status()["workloads"]] == ["echo"]
    # A JSON body from a local client without an Origin is served.
    status, text = curl("-X", "PUT", d.url + "/api/workloads/echo/idle",
                        "-H", "Content-Type: application/json; charset=utf-8",
                        "-d", '{"offload_after": "10m"}')
    assert status == 200, text


def test_a_rebinding_page_is_refused_on_every_route(daemon):
    d = daemon(config(daemon_extra="  allowed_hosts: [gpu.test]\n"))
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    routes = [("GET", "/api/status", {}), ("POST", "/mcp", {"json": ping}),
              ("GET", "/v1/models", {}), ("GET", "/w/x/", {}), ("GET", "/w/echo/", {}),
              ("GET", "/metrics", {}), ("GET", "/healthz", {})]
    for host in ("attacker.example", f"attacker.example:{d.port}"):
        for method, path, kw in routes:
            r = d.http.request(method, d.url + path, headers={"Host": host}, timeout=10, **kw)
            assert r.status_code == 403, (path, r.text)
            err = r.json()["error"]
            assert err["code"] == "forbidden_host"
            assert '"attacker.example' in err["message"] and "daemon.allowed_hosts" in err["message"]
    # The listen address, loopback names and allowed_hosts are served.
    for host in (f"127.0.0.1:{d.port}", "localhost", f"localhost:{d.port}", f"[::1]:{d.port}",
                 "gpu.test", f"GPU.test:{d.port}"):
        r = d.get("/api/status", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
        r = d.get("/w/echo/seen", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)
        assert r.json()["target"] == "/seen"


def test_an_allowed_origin_works_and_gets_cors_headers(daemon):
    d = daemon(config(daemon_extra="  cors: {origins: ['http://localhost:3000', "
                                   "'https://ui.example']}\n"))
    ui = {"Origin": "https://ui.example"}
    r = d.get("/api/status", headers=ui)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "Origin" in r.headers["Vary"]
    assert "Mcp-Session-Id" in r.headers["Access-Control-Expose-Headers"]

    # The preflight of a JSON PUT, answered by vramd itself, then the PUT.
    r = d.http.options(d.url + "/api/workloads/echo/idle", timeout=10, headers={
        **ui, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert r.status_code == 204, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert "PUT" in r.headers["Access-Control-Allow-Methods"]
    allowed = r.headers["Access-Control-Allow-Headers"].lower()
    for name in ("authorization", "content-type", "x-api-key", "mcp-session-id",
                 "mcp-protocol-version"):
        assert name in allowed
    assert int(r.headers["Access-Control-Max-Age"]) > 0
    r = d.put("/api/workloads/echo/idle", json={"offload_after": "5m"}, headers=ui)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"

    # MCP from that page (the loopback-only check of /mcp is gone with it).
    r = d.post("/mcp", headers=ui, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                         "params": {"protocolVersion": "2025-06-18",
                                                    "capabilities": {},
                                                    "clientInfo": {"name": "t", "version": "1"}}})
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "https://ui.example"

    # A workload's own CORS headers give way to vramd's.
    r = d.get("/w/echo/cors", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "Access-Control-Allow-Credentials" not in r.headers
    r = d.get("/w/echo/cors")
    assert "Access-Control-Allow-Origin" not in r.headers

    # vramd's own pages need no listing; other origins and their preflights are refused.
    r = d.get("/v1/models", headers={"Origin": d.url})
    assert r.status_code == 200
    r = d.http.options(d.url + "/api/workloads", timeout=10, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden_origin"
    assert "Access-Control-Allow-Origin" not in r.headers
    r = d.get("/v1/models", headers={"Origin": "http://localhost:3001"})
    assert r.status_code == 403


def test_a_bodyless_post_needs_no_type_and_no_token_on_loopback(daemon):
    d = daemon(config())
    status, text = curl("-X", "POST", d.url + "/api/gpu/offload")
    assert status == 200, text
    assert json.loads(text)["success"] is True


def with_token(daemon):
    """A vramd with TOKEN, whose requests session sends it."""
    d = daemon(config(daemon_extra=f"  token: {TOKEN}\n"), wait=False)
    d.http.headers["Authorization"] = f"Bearer {TOKEN}"
    d.wait_ready()
    return d


def test_what_listens_upstream_never_sees_the_token(daemon):
    d = with_token(daemon)
    forged = "unix pid=1 uid=0 gid=0 groups=0"
    h = {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": TOKEN, "X-Vramd-Peer": forged}
    for r in (d.get("/w/echo/hello", headers=h),
              d.post("/v1/chat/completions", headers=h,
                     json={"model": "echo-model", "messages": []})):
        assert r.status_code == 200, r.text
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        assert "authorization" not in seen and "x-api-key" not in seen
        assert "x-vramd-peer" not in seen
        assert TOKEN not in r.text and forged not in r.text
    # However the client spells it.
    r = d.get("/w/echo/", headers={"Authorization": f"bearer    {TOKEN}"})
    assert r.status_code == 200 and TOKEN not in r.text
    # Someone else's key passes unchanged.
    r = d.get("/w/echo/", headers={"Authorization": f"Bearer {TOKEN}", "X-Api-Key": "sk-up"})
    assert ["X-Api-Key", "sk-up"] in r.json()["headers"]


def test_other_credentials_reach_the_workload(daemon):
    d = daemon(config())
    r = d.get("/w/echo/", headers={"Authorization": "Bearer sk-upstream"})
    assert ["Authorization", "Bearer sk-upstream"] in r.json()["headers"]


def proc_number(pid, name, prefix, field):
    """Field `field` (split on spaces) of the line of /proc/PID/<name> that starts with prefix."""
    with open(f"/proc/{pid}/{name}") as f:
        for line in f:
            if line.startswith(prefix):
                return int(line.split()[field])
    raise AssertionError(f"no {prefix} in /proc/{pid}/{name}")


def rss_kib(pid):
    return proc_number(pid, "status", "VmRSS:", 1)


def test_idle_connections_give_back_what_large_bodies_took(daemon, monkeypatch):
    # Under AddressSanitizer freed memory waits in a quarantine (256 MiB) by design.
    asan = os.environ.get("ASAN_OPTIONS")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=0")
    d = daemon(config())
    pid = d.proc.pid
    body = b"x" * (16 * 1024 * 1024)
    # The model in the query, the body opaque: read whole, then answered 404.
    head = b"POST /v1/audio/transcriptions?model=nope HTTP/1.1\r\nHost: localhost\r\n" \
           b"Content-Type: application/octet-stream\r\n"
    chunk = 1024 * 1024
    chunked = b"".join(b"%x\r\n%s\r\n" % (chunk, body[i:i + chunk])
                       for i in range(0, len(body), chunk)) + b"0\r\n\r\n"
    assert raw(d, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")[0] == 200
    before = rss_kib(pid)
    conns = []
    for i in range(40):
        s = connect(d)
        s.settimeout(30)
        if i % 2:
            s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        else:
            s.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status, _, text = Reader(s).response()
        assert status == 404, text
        conns.append(s)
    time.sleep(0.5)
    grown = rss_kib(pid) - before
    assert grown < 10 * 1024, f"vramd's RSS grew by {grown} KiB for 40 idle connections"
    # They are still usable.
    for s in conns[:5]:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert Reader(s).response()[0] == 200
    for s in conns:
        s.close()


def test_the_token_is_checked_before_the_body_is_read(daemon):
    d = with_token(daemon)
    for path, extra in (("/w/echo/", b""), ("/api/workloads", b"Content-Type: application/json\r\n"),
                        ("/v1/chat/completions", b"Expect: 100-continue\r\n")):
        head = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong\r\n%s"
                b"Content-Length: 16777216\r\n\r\n" % (path.encode(), extra))
        # Only the head is sent: the answer cannot wait for the body.
        status, h, body, took = raw(d, head, timeout=5)
        assert status == 401, body
        assert json.loads(body)["error"]["code"] == "unauthorized"
        assert h["connection"] == ["close"]
        assert took < 1.0


def test_the_body_budget_answers_503_past_it(daemon, monkeypatch):
    monkeypatch.setenv("VRAMD_BODY_BUDGET", "4MiB")
    d = daemon(config())
    head = b"POST /v1/audio/transcriptions?model=nope HTTP/1.1\r\nHost: localhost\r\n" \
           b"Content-Length: %d\r\n\r\n"
    mib = 1024 * 1024
    slow = []
    for _ in range(3):
        s = connect(d)
        s.sendall(head % (mib + 1) + b"x" * 65536)  # a slow body: the rest never comes
        slow.append(s)
    time.sleep(0.5)
    status, h, body, took = raw(d, head % (2 * mib), timeout=5)
    msg = json.loads(body)["error"]
    assert status == 503 and msg["code"] == "busy", body
    assert h["retry-after"] == ["1"]
    assert took < 1.0
    # Small bodies do not count; the owner's socket does not either.
    r = d.post("/w/echo/", data=b"y" * 1000)
    assert r.status_code == 200
    u = socket.socket(socket.AF_UNIX)
    u.connect(d.sock)
    u.sendall(head % (2 * mib) + b"z" * (2 * mib))
    assert Reader(u).response()[0] == 404
    u.close()
    # The slow bodies gone, a large one fits again.
    for s in slow:
        s.close()
    time.sleep(0.5)
    status, _, body, _ = raw(d, head % (2 * mib) + b"x" * (2 * mib))
    assert status == 404, body


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"needs {n} descriptors, the hard limit is {hard}")
    if soft == resource.RLIM_INFINITY or soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def open_many(d, n, sources):
    """n TCP connections to d, spread over the source addresses given."""
    socks = []
    per = (n + len(sources) - 1) // len(sources)
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i // per], 0))
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", d.port))
        socks.append(s)
    return socks


def closed_by_vramd(socks):
    """How many of socks vramd has closed (they read as EOF)."""
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN | select.POLLHUP)
    return sum(1 for _, ev in p.poll(0) if ev)


def nofile_of(pid):
    return proc_number(pid, "limits", "Max open files", 3)


def test_the_owner_gets_in_past_5000_tcp_connections(daemon):
    raise_nofile(12000)
    # vramd raises its own limit (to 65536, or the hard limit): started with 1024, as is common.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        d = daemon(config())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    d.http.close()  # its kept-alive connection would hold one of the TCP slots
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    assert nofile_of(d.proc.pid) == want
    socks = open_many(d, 5000, [f"127.0.0.{i}" for i in range(2, 7)])
    try:
        # TCP clients may hold 4096 - 256 connections: the rest are closed as accepted.
        wait_for(lambda: closed_by_vramd(socks) >= 5000 - (4096 - 256), timeout=30,
                 what="vramd to close the TCP connections over its limit")
        time.sleep(0.5)
        assert closed_by_vramd(socks) == 5000 - (4096 - 256)
        # A new TCP client is turned away; the owner is not.
        late = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        late.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert Reader(late).closed()
        late.close()
        t0 = time.monotonic()
        r = d.ctl("status", check=0, timeout=20)
        assert "echo" in r.stdout
        assert time.monotonic() - t0 < 5
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: d.get("/healthz").status_code == 200, timeout=10, what="TCP to work again")


def test_one_address_holds_at_most_1024_connections(daemon):
    raise_nofile(4000)
    d = daemon(config())
    socks = open_many(d, 1030, ["127.0.0.9"])
    try:
        wait_for(lambda: closed_by_vramd(socks) >= 6, timeout=20,
                 what="vramd to close the connections over the per-address limit")
        time.sleep(0.5)
        assert closed_by_vramd(socks) == 6
        # Another address is served meanwhile.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.10", 0))
        s.connect(("127.0.0.1", d.port))
        s.settimeout(10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert Reader(s).response()[0] == 200
        s.close()
    finally:
        for s in socks:
            s.close()


def test_api_errors_are_json_whatever_is_sent(daemon):
    d = daemon(config())
    host = b"Host: localhost\r\n"
    # A head just under the gateway's 16 KiB limit, to a route the API serves.
    pad = b"X-Pad: " + b"a" * (16384 - 200) + b"\r\n"
    near = b"GET /api/workloads/echo HTTP/1.1\r\n" + host + pad
    near += b"X-Fill: " + b"b" * (16384 - len(near) - 12) + b"\r\n\r\n"
    assert len(near) == 16384
    mib = 1024 * 1024
    json_put = b"PUT /api/workloads/echo/idle HTTP/1.1\r\n" + host + \
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    cases = [
        (b"PROPFIND /api/status HTTP/1.1\r\n" + host + b"\r\n", 501),
        (b"TRACE /api/status HTTP/1.1\r\n" + host + b"\r\n", 501),
        (b"get /api/workloads HTTP/1.1\r\n" + host + b"\r\n", 501),
        (near, 200),
        (near[:-4] + b"c\r\n\r\n", 431),
        (json_put % (2 * mib) + b"{" * (2 * mib), 413),       # over what is relayed to the API
        (json_put % (900 * 1024) + b"{" * (900 * 1024), 413),  # over the API's own limit
        (b"OPTIONS * HTTP/1.1\r\n" + host + b"\r\n", 404),
        (b"GET /api/\xff\xfe HTTP/1.1\r\n" + host + b"\r\n", None),  # not UTF-8
        (b"GET /api/workloads?%zz=%%%% HTTP/1.1\r\n" + host + b"\r\n", None),
    ]
    for data, want in cases:
        status, h, body, _ = raw(d, data)
        if want is not None:
            assert status == want, (data[:60], status, body[:200])
        assert h["content-type"][0].startswith("application/json"), (data[:60], body[:200])
        json.loads(body)
    # A bare LF: refused at once, not after the 60 s idle timeout.
    status, h, body, took = raw(d, b"GET /api/status HTTP/1.1\nHost: localhost\n\n", timeout=5)
    assert status == 400 and took < 1.0
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_the_first_byte_timeout_is_not_the_stream_timeout(daemon):
    slow = "    first_byte_timeout: 60s\n    stream_timeout: 3s\n"
    d = daemon(config(echo_extra=slow))
    with open(d.config_path, "w") as f:
        f.write(config(echo_extra=slow.replace("60s", "1s")))
    d.ctl("reload", check=0)
    # A model server that does not answer: 504 after its first_byte_timeout (1 s, live).
    t0 = time.monotonic()
    r = d.get("/w/echo/silent")
    took = time.monotonic() - t0
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["code"] == "timeout" and "first_byte_timeout" in err["message"]
    assert 1.0 <= took < 4.0
    # A stream with pauses longer than the first-byte timeout, shorter than its own: whole.
    r = d.get("/w/echo/drip")
    assert r.status_code == 200 and r.text == "0\n1\n2\n"
    # A stream that stops: cut after stream_timeout.
    s = connect(d)
    s.settimeout(15)
    t0 = time.monotonic()
    s.sendall(b"GET /w/echo/stall HTTP/1.1\r\nHost: localhost\r\n\r\n")
    rd = Reader(s)
    status, _ = rd.head()
    assert status == 200
    while True:
        try:
            rd._fill()
        except (EOFError, ConnectionResetError):
            break
    assert 3.0 <= time.monotonic() - t0 < 8.0
    assert b"0\r\n\r\n" not in rd.buf
    s.close()
