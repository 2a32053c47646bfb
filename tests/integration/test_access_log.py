# SPDX-License-Identifier: MIT
"""The gateway's access log (daemon.access_log): a JSON line per request with
method, path, model, workload, status, bytes, time to first byte, total time
and queue wait, in its own rotated file; the same timings in /metrics."""
import json
import os
import re

import requests

from conftest import wait_for
from test_gateway import chat, config


def access_config(d_extra):
    text = config(dict(name="chat", load="500ms", chunks=3, delay="100ms"))
    return text.replace("daemon:\n", "daemon:\n" + d_extra, 1)


def lines(path):
    """The access log's lines, less the fixture's /healthz polls."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [l for l in (json.loads(line) for line in f if line.strip()) if l["path"] != "/healthz"]


def test_access_log_lines_and_metrics(daemon):
    d = daemon(access_config("  access_log: {path: {workdir}/access.log}\n"))
    path = os.path.join(d.workdir, "access.log")
    # The first request starts the workload: it waits in the queue (the demo loads for 500 ms).
    r = chat(d, "chat-model", stream=True)
    assert r.status_code == 200
    body = r.content
    r = chat(d, "nope-model")
    assert r.status_code == 404
    assert d.get("/api/workloads/chat").status_code == 200
    got = wait_for(lambda: (lambda ls: ls if len(ls) >= 3 else None)(lines(path)), 10,
                   what="three lines in the access log")
    first, missing, api = got[0], got[1], got[2]
    assert set(first) == {"time", "client", "method", "path", "model", "workload", "status", "bytes",
                          "first_byte_ms", "total_ms", "queue_ms"}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert first["client"] == "127.0.0.1"
    assert (first["method"], first["path"], first["model"], first["workload"], first["status"]) == \
        ("POST", "/v1/chat/completions", "chat-model", "chat", 200)
    assert first["bytes"] > len(body)  # the body and the head
    assert first["queue_ms"] >= 400, first  # waited for the 500 ms load
    # chunks 100 ms apart: the first byte comes well before the end
    assert first["queue_ms"] <= first["first_byte_ms"] < first["total_ms"] - 150, first
    assert (missing["status"], missing["model"], missing["workload"]) == (404, "nope-model", "")
    assert missing["bytes"] > 0 and missing["first_byte_ms"] is not None
    assert (api["method"], api["path"], api["workload"], api["status"]) == \
        ("GET", "/api/workloads/chat", "", 200)
    # A request over the control socket says so.
    d.sock_request("GET", "/api/status")
    wait_for(lambda: any(l["client"] == "unix" and l["path"] == "/api/status" for l in lines(path)),
             10, what="the socket request's line")

    m = d.get("/metrics").text
    assert re.search(r'^vram_gateway_queue_wait_seconds_count\{workload="chat"\} 1$', m, re.M), m
    assert re.search(r'^vram_gateway_first_byte_seconds_count\{workload="chat"\} 1$', m, re.M)
    b = re.search(r'^vram_gateway_response_bytes_total\{workload="chat"\} (\d+)$', m, re.M)
    assert b and int(b.group(1)) == first["bytes"]
    # the queue wait was over 250 ms: not in the 0.25 bucket, and the same as the log's
    assert re.search(r'^vram_gateway_queue_wait_seconds_bucket\{workload="chat",le="0.25"\} 0$', m, re.M)
    s = re.search(r'^vram_gateway_queue_wait_seconds_sum\{workload="chat"\} (\S+)$', m, re.M)
    assert abs(float(s.group(1)) * 1000 - first["queue_ms"]) < 1


def test_access_log_rotates_and_is_off_by_default(daemon):
    d = daemon(access_config("  access_log: {path: {workdir}/access.log, max_size: 1KiB, keep: 1}\n"))
    path = os.path.join(d.workdir, "access.log")
    for i in range(20):
        assert d.get(f"/api/workloads/chat?n={i}").status_code == 200
    wait_for(lambda: os.path.exists(path + ".1"), 10, what="a rotated access log")
    assert [l["path"] for l in lines(path + ".1")][-1].startswith("/api/workloads/chat?n=")
    assert not os.path.exists(path + ".2")
    assert os.path.getsize(path) <= 1024 and os.path.getsize(path + ".1") <= 1024
    # the line is written once the response is out: it may come just after the client has it
    wait_for(lambda: "/api/workloads/chat?n=19" in [l["path"] for l in lines(path)], 10,
             what="the last request's line")

    # Without access_log nothing is written next to the config.
    d2 = daemon()
    assert d2.get("/api/status").status_code == 200
    assert not [f for f in os.listdir(d2.workdir) if "access" in f]


def test_access_log_refused_values(daemon):
    bad = access_config("  access_log: {path: /tmp/x.log, max_size: lots}\n")
    d = daemon(bad, wait=False)
    d.proc.wait(20)
    assert d.proc.returncode != 0
    assert "access_log.max_size" in d.log_text(), d.log_text()


def test_each_request_on_a_connection_has_its_line(daemon):
    # A CORS preflight answered by the front door, then a request on the same
    # connection: each has its own line (the second is not logged as the first).
    d = daemon(access_config("  access_log: {workdir}/access.log\n"
                             "  cors: { origins: ['http://ui.example:3000'] }\n"))
    path = os.path.join(d.workdir, "access.log")
    s = requests.Session()
    r = s.options(d.url + "/api/gpu/status", headers={
        "Origin": "http://ui.example:3000", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204, r.text
    assert s.get(d.url + "/api/gpu/status?after=preflight").status_code == 200
    s.close()
    got = wait_for(lambda: (lambda ls: ls if len(ls) >= 2 else None)(lines(path)), 10,
                   what="two lines")
    assert [(l["method"], l["path"], l["status"]) for l in got] == [
        ("OPTIONS", "/api/gpu/status", 204), ("GET", "/api/gpu/status?after=preflight", 200)]
