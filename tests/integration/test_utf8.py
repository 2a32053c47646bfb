# SPDX-License-Identifier: MIT
"""Client text that is not UTF-8, or that vramd cuts inside a character.

jansson refuses text that is not UTF-8, and the NULL it returned was reported
as "out of memory": 7 of 10 such inputs answered 500, and an MCP request could
get an empty 202. Each input here gets a 4xx with a JSON error a person can
read (an MCP request: a JSON-RPC error or tool result with its id). A client's
newline, logged at debug level, stays inside one log line.
"""
import json
import socket

import pytest

CUT = b"%E2%82"          # the euro sign, U+20AC (e2 82 ac), cut after two bytes, URL-encoded
RAW_CUT = b"\xe2\x82"    # the same, raw in the request line
# 'a' then 40 two-byte characters: a message that quotes it with "%.64s" cuts inside the 32nd
LONG = ("a" + "\u00e9" * 40).encode()


def raw_request(d, method, target, body=b"", headers=b""):
    """Sends one request as bytes; returns (status, headers dict, body bytes).
    Ad-hoc workloads may be asked for only on the control socket (over TCP they
    need the token and daemon.run_as), so that route goes there."""
    head = (method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n" +
            headers + b"\r\n")
    if method == b"POST" and target == b"/api/workloads":
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(d.sock)
    else:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    with s:
        s.sendall(head + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, hdrs, payload


def json_error(status, hdrs, payload, want):
    """Asserts a 4xx JSON error in valid UTF-8 and returns its message."""
    assert status == want, (status, payload[:300])
    assert hdrs["content-type"].startswith("application/json"), hdrs
    body = json.loads(payload.decode("utf-8"))  # strict: the reply itself is UTF-8
    msg = body["error"]["message"]
    assert isinstance(msg, str) and msg and "out of memory" not in msg, body
    return msg


# (method, target, body, status, words the message must hold)
REST_CASES = [
    # a workload name cut inside a character, in every route that takes one
    (b"GET", b"/api/workloads/" + CUT, b"", 400, "/api/workloads/%E2%82 is not valid UTF-8"),
    (b"GET", b"/api/workloads/ab" + RAW_CUT, b"", 400, "is not valid UTF-8"),
    (b"POST", b"/api/workloads/" + CUT + b"/start", b"", 400, "is not valid UTF-8"),
    (b"POST", b"/api/workloads/" + CUT + b"/stop?wait=0", b"", 400, "is not valid UTF-8"),
    (b"PUT", b"/api/workloads/" + CUT + b"/idle", b'{"offload_after": "1m"}', 400,
     "is not valid UTF-8"),
    (b"GET", b"/api/workloads/" + CUT + b"/logs", b"", 400, "is not valid UTF-8"),
    (b"DELETE", b"/api/workloads/" + CUT, b"", 400, "is not valid UTF-8"),
    (b"POST", b"/api/hook/processes/" + CUT + b"/offload", b"", 400, "is not valid UTF-8"),
    # the gateway's routes and no route at all
    (b"GET", b"/w/" + CUT + b"/health", b"", 404, "no workload named"),
    (b"GET", b"/nope/" + RAW_CUT, b"", 404, "no route /nope/\ufffd\ufffd"),
    # a query value cut inside a character
    (b"POST", b"/api/workloads/chat/start?wait=" + CUT, b"", 400, 'wait: expected 0 or 1, got "\ufffd\ufffd"'),
    # bodies that are not UTF-8: jansson's own words, with the position
    (b"POST", b"/api/workloads", b'{"name": "x\xe2\x82", "cmd": ["true"]}', 400,
     "invalid JSON at line 1, column 11: unable to decode byte 0xe2"),
    (b"POST", b"/api/gpu/offload", b'{"workload": "\xe2\x82"}', 400, "unable to decode byte 0xe2"),
    (b"POST", b"/api/gpu/timeout", b'{"timeout": "\xff"}', 400, "unable to decode byte 0xff"),
    # valid UTF-8 that the message cuts with "%.64s" inside a character
    (b"PUT", b"/api/workloads/chat/idle", b'{"offload_after": "' + LONG + b'"}', 400,
     'offload_after: expected a duration like "10m"'),
    (b"POST", b"/api/gpu/offload", b'{"workload": "' + LONG + b'"}', 404, 'no workload named "a\u00e9'),
    (b"POST", b"/v1/chat/completions", b'{"model": "' + LONG + b'", "messages": []}', 404,
     "no workload serves model"),
]


@pytest.mark.parametrize("method,target,body,status,words", REST_CASES,
                         ids=[f"{c[0].decode()} {c[1].decode('latin-1')}"[:60] for c in REST_CASES])
def test_malformed_utf8_gets_a_4xx_json_error(daemon, method, target, body, status, words):
    d = daemon()
    msg = json_error(*raw_request(d, method, target, body), status)
    assert words in msg, msg
    # and the daemon is fine
    assert d.get("/healthz").status_code == 200


def mcp_session(d):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    r = d.post("/mcp", json=init)
    assert r.status_code == 200, r.text
    return (b"Mcp-Session-Id: " + r.headers["Mcp-Session-Id"].encode() +
            b"\r\nMCP-Protocol-Version: 2025-06-18\r\n")


def mcp(d, session, body):
    status, hdrs, payload = raw_request(d, b"POST", b"/mcp", body, session)
    assert payload, (status, hdrs)  # never an empty 202 for a request
    return status, json.loads(payload.decode("utf-8"))


MCP_CASES = [
    # (body, JSON-RPC error code, words); each has an id, so each must be answered
    (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"' + LONG + b'"}}',
     -32602, 'unknown tool "a\u00e9'),
    (b'{"jsonrpc":"2.0","id":7,"method":"' + LONG + b'"}', -32601, "method not found: a\u00e9"),
    # 2025-06-18: bad tool arguments are a protocol error; the key is quoted with "%.64s"
    (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"offload_gpu",'
     b'"arguments":{"' + LONG + b'":1}}}', -32602, 'offload_gpu: unknown argument "a\u00e9'),
]


@pytest.mark.parametrize("body,code,words", MCP_CASES, ids=["tool name", "method", "argument"])
def test_mcp_error_cut_inside_a_character_is_answered_with_its_id(daemon, body, code, words):
    d = daemon()
    status, resp = mcp(d, mcp_session(d), body)
    assert status == 200 and resp["id"] == 7, resp
    assert resp["error"]["code"] == code, resp
    assert words in resp["error"]["message"], resp


def test_mcp_tool_results_quoting_client_text(daemon):
    d = daemon()
    session = mcp_session(d)
    # a tool that runs and fails says why in its result, whatever the text held
    for args, words in (({"workload": LONG.decode()}, 'no workload named "a\u00e9'),
                        ({"timeout": LONG.decode()}, "timeout: expected a duration")):
        tool = "start_workload" if "workload" in args else "update_gpu_timeout"
        body = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                           "params": {"name": tool, "arguments": args}}).encode()
        status, resp = mcp(d, session, body)
        assert status == 200 and resp["id"] == 8, resp
        res = resp["result"]
        assert res["isError"] is True and res["content"], res
        assert words in res["content"][0]["text"], res
    # a body that is not UTF-8 is a parse error with jansson's position
    status, resp = mcp(d, session, b'{"jsonrpc":"2.0","id":9,"method":"x\xe2\x82"}')
    assert status == 400 and resp["error"]["code"] == -32700, resp
    assert "column 35: unable to decode byte 0xe2" in resp["error"]["message"], resp


def test_a_newline_in_an_mcp_method_stays_in_its_log_line(daemon):
    d = daemon()  # log_level: debug
    session = mcp_session(d)
    for body in (b'{"jsonrpc":"2.0","method":"x\\ninjected line"}',        # a notification
                 b'{"jsonrpc":"2.0","id":3,"method":"x\\ninjected line\\u001b[2J"}'):
        status, _, _ = raw_request(d, b"POST", b"/mcp", body, session)
        assert status in (200, 202)
    text = d.log_text()  # written before the reply went out
    lines = [l for l in text.splitlines() if "injected line" in l]
    assert len(lines) == 1, lines
    assert lines[0].endswith("MCP notification x\\ninjected line"), lines
    assert not any(l.startswith("injected line") for l in text.splitlines())
    assert "\x1b" not in text


BAD_OUTPUT_CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
workloads:
  latin1:
    cmd: [python3, -c, "import sys; sys.stdout.buffer.write(b'caf\\\\xe9 \\\\xe2\\\\x82 end\\\\n'); sys.stdout.flush(); raise SystemExit(3)"]
    gpus: 0
    health: { tcp: true }
    restart: never
"""


def test_workload_output_that_is_not_utf8_stays_in_status(daemon):
    # A failed workload's log tail went into JSON as it was: jansson refused it,
    # and the workload dropped out of /api/status (and its own route said 404).
    d = daemon(BAD_OUTPUT_CONFIG)
    r = d.ctl("start", "latin1")
    assert r.returncode == 1, r.stdout
    w = d.wait_state("latin1", "failed")
    assert "caf\ufffd \ufffd\ufffd end\n" in w["log_tail"], w["log_tail"]
    assert "exited with status 3" in w["last_error"], w
    assert [x["name"] for x in d.status()["workloads"]] == ["latin1"]
