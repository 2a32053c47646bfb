# SPDX-License-Identifier: MIT
"""MCP conversations with the official MCP TypeScript SDK client, over
streamable HTTP at /mcp and over stdio through `vramctl mcp`: every tool,
with good and bad arguments; and the HTTP transport's rules (sessions,
revisions, Origin) with plain requests."""
import base64
import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest
import requests

from conftest import DEFAULT_CONFIG, SOURCE, VRAMCTL, VRAMD, free_port
from jsclients import run_node

TOOLS = ["get_gpu_status", "offload_gpu", "release_gpu", "update_gpu_timeout",
         "list_workloads", "start_workload", "stop_workload", "restore_workload", "park_workload",
         "plan"]


def project_version():
    """The project() version in meson.build."""
    with open(os.path.join(SOURCE, "meson.build")) as f:
        return re.search(r"^\s*version:\s*'([^']+)'", f.read(), re.M).group(1)


def test_every_binary_reports_the_project_version():
    v = project_version()
    assert subprocess.run([VRAMD, "--version"], capture_output=True, text=True,
                          check=True).stdout == f"vramd {v}\n"
    assert subprocess.run([VRAMCTL, "--version"], capture_output=True, text=True,
                          check=True).stdout == f"vramctl {v}\n"


def by_call(out):
    """The calls in the order the script made them, as (tool, args, record)."""
    return [(c["tool"], c["args"], c) for c in out["calls"]]


def check_conversation(d, out):
    assert [t["name"] for t in out["tools"]] == TOOLS
    assert all(t["hasOutputSchema"] for t in out["tools"])
    tools = {t["name"]: t for t in out["tools"]}
    assert tools["start_workload"]["required"] == ["workload"]
    # timeout_seconds or timeout (anyOf), so neither is required by name
    assert tools["update_gpu_timeout"]["required"] == []
    assert tools["update_gpu_timeout"]["properties"] == ["timeout_seconds", "timeout", "workload"]
    assert out["server"]["name"] == "vramd"
    assert out["server"]["version"] == project_version()

    calls = by_call(out)
    for tool, args, rec in calls[:11]:
        assert "error" not in rec, (tool, args, rec)
        assert rec["isError"] is False, (tool, args, rec)

    status, listing, plan_own, plan_small = [c[2] for c in calls[:4]]
    assert set(status["structured"]) == {"chat", "embed"}
    assert status["structured"]["embed"]["location"] == "unloaded"
    assert [w["name"] for w in listing["structured"]["workloads"]] == ["chat", "embed"]
    assert plan_own["structured"]["fits"] is True
    # One 16GiB GPU cannot hold the 20GiB chat workload.
    assert plan_small["structured"]["fits"] is False
    assert "refused" in plan_small["text"]

    start, timeout, offload, restore, release, start2, stop = [c[2] for c in calls[4:11]]
    assert start["structured"]["state"] == "ready"
    assert timeout["structured"]["timeout"] == 600
    assert offload["structured"]["results"][0]["state"] == "offloaded"
    assert offload["structured"]["results"][0]["bytes"] == 4 * 2**30
    assert restore["structured"]["state"] == "ready"
    assert release["structured"]["results"][0]["state"] == "stopped"
    assert start2["structured"]["state"] == "ready"
    assert stop["structured"]["state"] == "stopped"
    assert d.state("embed") == "stopped"
    assert d.workload("embed")["timeouts"]["release_after_seconds"] == 600

    bad = {(c[0], str(c[1])): c[2] for c in calls[11:]}
    assert bad[("start_workload", "{}")]["isError"] is True
    assert bad[("start_workload", "{}")]["text"] == "start_workload: workload: required"
    assert bad[("start_workload", "{'workload': 'no-such-model'}")]["text"] == \
        'no workload named "no-such-model" (known: chat, embed)'
    wrong_state = bad[("restore_workload", "{'workload': 'embed'}")]
    assert wrong_state["isError"] is True and "embed is stopped" in wrong_state["text"]
    assert "got \"soon\"" in bad[("update_gpu_timeout", "{'timeout': 'soon'}")]["text"]
    assert bad[("offload_gpu", "{'workload': 42}")]["text"] == \
        "offload_gpu: workload: expected a string, got number"
    assert bad[("plan", "{'gpus': 'lots'}")]["isError"] is True
    unknown = bad[("no_such_tool", "{}")]
    assert unknown["error"]["code"] == -32602
    assert "no_such_tool" in unknown["error"]["message"]


def test_mcp_sdk_over_http(daemon):
    d = daemon()
    out = run_node("mcp-client.mjs", "--http", d.url + "/mcp")
    assert out["transport"] == "http"
    assert out["protocolVersion"] == "2025-11-25"
    assert len(out["sessionId"]) == 32
    check_conversation(d, out)


def test_mcp_sdk_over_stdio_through_vramctl(daemon):
    d = daemon()
    out = run_node("mcp-client.mjs", "--stdio", VRAMCTL, "--url", d.sock)
    assert out["transport"] == "stdio"
    check_conversation(d, out)


def rpc(method, id=1, **params):
    msg = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        msg["id"] = id
    return msg


def test_mcp_http_sessions_revisions_and_origin(daemon):
    d = daemon()
    url = d.url + "/mcp"
    init = rpc("initialize", protocolVersion="2025-06-18", capabilities={},
               clientInfo={"name": "t", "version": "1"})
    r = requests.post(url, json=init, timeout=10)
    assert r.status_code == 200
    assert r.json()["result"]["protocolVersion"] == "2025-06-18"
    sid = r.headers["Mcp-Session-Id"]
    h = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}

    r = requests.post(url, json=rpc("notifications/initialized", id=None), headers=h, timeout=10)
    assert r.status_code == 202 and r.text == ""
    r = requests.post(url, json=rpc("ping"), headers=h, timeout=10)
    assert r.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    # 2025-06-18: bad arguments are a protocol error.
    r = requests.post(url, json=rpc("tools/call", name="start_workload", arguments={}),
                      headers=h, timeout=10)
    assert r.json()["error"]["code"] == -32602

    # No session, another session's revision, an unknown session.
    r = requests.post(url, json=rpc("ping"), timeout=10)
    assert r.status_code == 400 and "Mcp-Session-Id" in r.json()["error"]["message"]
    # Another revision we speak, on a 2025-06-18 session: served by the session's
    # revision (clients send 2025-03-26 so; the official SDK serves it too).
    r = requests.post(url, json=rpc("tools/call", name="start_workload", arguments={}),
                      headers={**h, "MCP-Protocol-Version": "2025-03-26"}, timeout=10)
    assert r.status_code == 200 and r.json()["error"]["code"] == -32602
    r = requests.post(url, json=rpc("ping"),
                      headers={**h, "MCP-Protocol-Version": "2099-01-01"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32022
    assert r.json()["error"]["data"] == {"supported": ["2025-03-26", "2025-06-18", "2025-11-25",
                                                       "2026-07-28"],
                                         "requested": "2099-01-01"}
    # A cursor tools/list never handed out.
    r = requests.post(url, json=rpc("tools/list", cursor="x"), headers=h, timeout=10)
    assert r.json()["error"]["code"] == -32602
    r = requests.post(url, json=rpc("ping"), headers={**h, "Mcp-Session-Id": "0" * 32},
                      timeout=10)
    assert r.status_code == 404

    # Parse errors, batches (none since 2025-06-18): not a request to answer, so 400.
    r = requests.post(url, data=b"{nope", headers={**h, "Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    r = requests.post(url, json=[rpc("ping")], headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    assert r.json()["id"] is None

    # No server-initiated stream; browsers from elsewhere are refused.
    r = requests.get(url, headers=h, timeout=10)
    assert r.status_code == 405
    r = requests.post(url, json=rpc("ping"), headers={**h, "Origin": "https://evil.example"},
                      timeout=10)
    assert r.status_code == 403
    r = requests.post(url, json=rpc("ping"), headers={**h, "Origin": f"{d.url}"}, timeout=10)
    assert r.status_code == 200

    # initialize always makes a session of a revision with a handshake: asked
    # for one it does not know, or for 2026-07-28 (which has no initialize),
    # it answers 2025-11-25 and the client decides.
    for asked in ("2026-07-28", "2099-01-01"):
        r = requests.post(url, json=rpc("initialize", protocolVersion=asked), timeout=10)
        assert r.json()["result"]["protocolVersion"] == "2025-11-25"
        assert len(r.headers["Mcp-Session-Id"]) == 32
    # A failed initialize leaves no session behind.
    r = requests.post(url, json={**rpc("initialize", protocolVersion="2025-11-25"),
                                 "jsonrpc": "1.0"}, timeout=10)
    assert r.json()["error"]["code"] == -32600 and "Mcp-Session-Id" not in r.headers

    # DELETE ends the session.
    assert requests.delete(url, headers=h, timeout=10).status_code == 204
    r = requests.post(url, json=rpc("ping"), headers=h, timeout=10)
    assert r.status_code == 404


META_2026 = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
             "io.modelcontextprotocol/clientCapabilities": {},
             "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}


def modern(method, id=1, **params):
    """A 2026-07-28 request and the headers its transport page asks for."""
    msg = rpc(method, id, **params, _meta=META_2026)
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
    if "name" in params:
        headers["Mcp-Name"] = params["name"]
    return msg, headers


def test_mcp_http_stateless_revision(daemon):
    """2026-07-28 (https://modelcontextprotocol.io/specification/2026-07-28): no
    initialize, no session; the headers mirror the body and are checked."""
    d = daemon()
    url = d.url + "/mcp"

    msg, h = modern("server/discover")
    r = requests.post(url, json=msg, headers=h, timeout=10)
    assert r.status_code == 200 and "Mcp-Session-Id" not in r.headers
    res = r.json()["result"]
    assert res["supportedVersions"] == ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
    assert res["resultType"] == "complete" and res["cacheScope"] == "public"
    assert res["_meta"]["io.modelcontextprotocol/serverInfo"]["version"] == project_version()

    msg, h = modern("tools/call", name="get_gpu_status", arguments={})
    # A session id from an older revision is ignored.
    r = requests.post(url, json=msg, headers={**h, "Mcp-Session-Id": "0" * 32}, timeout=10)
    assert r.status_code == 200 and "Mcp-Session-Id" not in r.headers
    res = r.json()["result"]
    assert res["structuredContent"]["chat"]["state"] == "stopped"
    assert res["resultType"] == "complete"
    # Mcp-Name in the base64 form a client uses for text a header cannot carry.
    r = requests.post(url, json=msg, timeout=10, headers={
        **h, "Mcp-Name": "=?base64?" + base64.b64encode(b"get_gpu_status").decode() + "?="})
    assert r.status_code == 200 and r.json()["result"]["isError"] is False

    def refused(msg, headers, status, code):
        r = requests.post(url, json=msg, headers=headers, timeout=10)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code, r.text
        assert r.json()["id"] == msg.get("id")
        return r.json()["error"]

    # Server Validation: headers missing or saying something else than the body.
    del h["Mcp-Method"]
    assert "Mcp-Method" in refused(msg, h, 400, -32020)["message"]
    h["Mcp-Method"] = "tools/list"
    refused(msg, h, 400, -32020)
    h["Mcp-Method"] = "tools/call"
    e = refused(msg, {**h, "Mcp-Name": "plan"}, 400, -32020)
    assert "plan" in e["message"] and "get_gpu_status" in e["message"]
    refused(msg, {k: v for k, v in h.items() if k != "Mcp-Name"}, 400, -32020)
    refused(msg, {k: v for k, v in h.items() if k != "MCP-Protocol-Version"}, 400, -32020)
    # The revision: one we do not speak, or the body saying another.
    e = refused(msg, {**h, "MCP-Protocol-Version": "1900-01-01"}, 400, -32022)
    assert e["data"]["requested"] == "1900-01-01" and "2026-07-28" in e["data"]["supported"]
    other = {**msg, "params": {**msg["params"], "_meta": {
        **META_2026, "io.modelcontextprotocol/protocolVersion": "2025-11-25"}}}
    refused(other, h, 400, -32020)
    # _meta must carry the revision and the client's capabilities.
    bare = rpc("tools/call", name="get_gpu_status", arguments={})
    assert "protocolVersion" in refused(bare, h, 400, -32602)["message"]
    no_caps = {**msg, "params": {**msg["params"], "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    assert "clientCapabilities" in refused(no_caps, h, 400, -32602)["message"]
    # Unknown methods are 404 with -32601; ping is gone in 2026-07-28.
    for method in ("resources/list", "ping"):
        msg, h = modern(method)
        refused(msg, h, 404, -32601)
    # No stream to open, no session to end.
    assert requests.get(url, headers=h, timeout=10).status_code == 405
    assert requests.delete(url, headers=h, timeout=10).status_code == 405
    # A notification is accepted as is.
    r = requests.post(url, json=rpc("notifications/cancelled", id=None, requestId=5,
                                    _meta=META_2026), headers=h, timeout=10)
    assert r.status_code == 202 and r.text == ""


def test_mcp_start_waits_and_times_out(daemon):
    """A start that takes longer than the tool's timeout answers isError and goes on."""
    d = daemon(DEFAULT_CONFIG.replace("--load-time, 100ms", "--load-time, 3s"))
    url = d.url + "/mcp"
    msg, h = modern("tools/call", name="start_workload",
                    arguments={"workload": "embed", "timeout": 1})
    r = requests.post(url, json=msg, headers=h, timeout=30)
    res = r.json()["result"]
    assert res["isError"] is True
    assert "not done after 1 s" in res["content"][0]["text"]
    assert d.state("embed") == "starting"
    d.wait_state("embed", "ready", timeout=15)



SLOW_EMBED = DEFAULT_CONFIG.replace("--load-time, 100ms", "--load-time, 3s")


class Bridge:
    """`vramctl mcp` as an MCP client starts it: lines to its stdin, replies
    read from its stdout on a thread, each with the time it came."""

    def __init__(self, d, url=None):
        self.p = subprocess.Popen([VRAMCTL, "--url", url or d.sock, "mcp"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.replies.put((time.monotonic(), json.loads(line)))
        self.replies.put((time.monotonic(), None))

    def send(self, msg):
        self.p.stdin.write((msg if isinstance(msg, str) else json.dumps(msg)) + "\n")
        self.p.stdin.flush()

    def recv(self, timeout=30):
        return self.replies.get(timeout=timeout)

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=30) == 0
        assert self.recv()[1] is None, "a reply after the end"

    def initialize(self):
        self.send(rpc("initialize", id=0, protocolVersion="2025-11-25", capabilities={},
                      clientInfo={"name": "t", "version": "1"}))
        assert self.recv()[1]["result"]["protocolVersion"] == "2025-11-25"
        self.send(rpc("notifications/initialized", id=None))


def call(id, tool, **args):
    return rpc("tools/call", id=id, name=tool, arguments=args)


def test_vramctl_mcp_answers_a_quick_request_while_a_slow_one_waits(daemon):
    d = daemon(SLOW_EMBED)
    b = Bridge(d)
    b.initialize()
    sent = time.monotonic()
    b.send(call(1, "start_workload", workload="embed", timeout=60))
    # The start is under way (its reply waits 3 s for the workload) when the listing goes.
    d.wait_state("embed", "starting", timeout=2)
    b.send(call(2, "list_workloads"))
    at, first = b.recv()
    assert first["id"] == 2, first
    assert at - sent < 2.0
    states = {w["name"]: w["state"] for w in first["result"]["structuredContent"]["workloads"]}
    assert states["embed"] == "starting"
    at, second = b.recv()
    assert second["id"] == 1 and second["result"]["structuredContent"]["state"] == "ready"
    assert at - sent >= 2.5

    # The stateless revision through the bridge: it adds the headers 2026-07-28 asks for.
    b.send(rpc("tools/call", id=3, name="get_gpu_status", arguments={}, _meta=META_2026))
    res = b.recv()[1]["result"]
    assert res["resultType"] == "complete"
    assert res["structuredContent"]["embed"]["location"] == "GPU"
    b.send(rpc("server/discover", id=4, _meta=META_2026))
    assert "2026-07-28" in b.recv()[1]["result"]["supportedVersions"]
    b.close()


def test_vramctl_mcp_sdk_client_concurrent_calls(daemon):
    """The SDK client's own concurrency, through the bridge."""
    d = daemon(SLOW_EMBED)
    out = run_node("mcp-concurrent.mjs", "--stdio", VRAMCTL, "--url", d.sock)
    assert out["order"] == ["list_workloads", "start_workload"], out
    assert out["ms"]["list_workloads"] < 2000 <= out["ms"]["start_workload"], out
    # The two went on separate connections: the listing may have come before the start.
    listing = out["results"]["list_workloads"]["structured"]["workloads"]
    assert {w["name"]: w["state"] for w in listing}["embed"] in ("stopped", "starting")
    assert out["results"]["start_workload"]["structured"]["state"] == "ready"


def test_vramctl_mcp_bounds_and_cancellation(daemon):
    d = daemon(SLOW_EMBED)
    b = Bridge(d)
    b.initialize()

    # A line over 1 MiB is dropped, answered with id null; the next one is served.
    b.send("[" + " " * (1024 * 1024) + "]")
    b.send(rpc("ping", id=1))
    err = b.recv()[1]
    assert err["id"] is None and err["error"]["code"] == -32600
    assert str(1024 * 1024) in err["error"]["message"]
    assert b.recv()[1] == {"jsonrpc": "2.0", "id": 1, "result": {}}

    # 32 requests in flight at most: the 33rd is refused at once, the others go on.
    for i in range(100, 133):
        b.send(call(i, "start_workload", workload="embed", timeout=60))
    at, busy = b.recv(timeout=10)
    assert busy["id"] == 132 and busy["error"]["code"] == -31000
    assert "32" in busy["error"]["message"]
    ids = sorted(b.recv()[1]["id"] for _ in range(32))
    assert ids == list(range(100, 132))

    # notifications/cancelled drops a request in flight: no reply for it; the start goes on.
    b.send(call(200, "stop_workload", workload="embed"))
    assert b.recv()[1]["result"]["structuredContent"]["state"] == "stopped"
    b.send(call(201, "start_workload", workload="embed", timeout=60))
    d.wait_state("embed", "starting", timeout=10)
    b.send(rpc("notifications/cancelled", id=None, requestId=201))
    b.send(rpc("ping", id=202))
    assert b.recv()[1]["id"] == 202
    d.wait_state("embed", "ready", timeout=15)
    with pytest.raises(queue.Empty):
        b.recv(timeout=1)
    b.close()


def test_vramctl_mcp_over_tcp(daemon):
    d = daemon()
    port = d.url.rsplit(":", 1)[1]
    # "localhost" may name ::1 first, where vramd does not listen: the next address serves.
    b = Bridge(d, f"http://localhost:{port}")
    b.initialize()
    b.send(rpc("ping", id=1))
    assert b.recv()[1] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    b.close()
    # Nothing listening: each request is answered with the reason.
    b = Bridge(d, f"http://127.0.0.1:{free_port()}")
    b.send(rpc("ping", id="a"))
    err = b.recv()[1]
    assert err["id"] == "a" and err["error"]["code"] == -32603
    assert "cannot connect to vramd at http://127.0.0.1:" in err["error"]["message"]
    b.close()


def test_every_tool_result_validates_in_the_sdk(daemon):
    """Each tool in the forms the TTS apps and other clients send it; the
    SDK's callTool checks structuredContent against the outputSchema."""
    d = daemon()
    out = run_node("mcp-tools.mjs", "--http", d.url + "/mcp", "--workload", "embed")
    failed = [c for c in out["calls"] if "error" in c or c["isError"]]
    assert not failed, failed
    called = {c["tool"] for c in out["calls"]}
    assert called == {t["name"] for t in out["tools"]}  # every tool
    by_args = {(c["tool"], json.dumps(c["args"], sort_keys=True)): c for c in out["calls"]}
    # update_gpu_timeout {"timeout_seconds": 300}, exactly as the TTS apps send it
    r = by_args[("update_gpu_timeout", '{"timeout_seconds": 300}')]["structured"]
    assert r == {"success": True, "message": "idle release timeout set to 5m", "timeout": 300.0}
    r = by_args[("update_gpu_timeout", '{"timeout": 600}')]["structured"]
    assert r["timeout"] == 600.0 and "workload" not in r
    r = by_args[("update_gpu_timeout", '{"timeout_seconds": "10m", "workload": "embed"}')]
    assert r["structured"]["workload"] == "embed"
    # the last call, 0 for all: never
    assert d.workload("chat")["timeouts"]["release_after_seconds"] is None


def test_tool_annotations(daemon):
    d = daemon()
    out = run_node("mcp-tools.mjs", "--http", d.url + "/mcp", "--workload", "embed")
    ann = {t["name"]: t["annotations"] for t in out["tools"]}
    for name, a in ann.items():
        assert a is not None, name
        assert set(a) == {"title", "readOnlyHint", "destructiveHint", "idempotentHint",
                          "openWorldHint"}, name
        assert a["openWorldHint"] is False
    reads = {n for n, a in ann.items() if a["readOnlyHint"]}
    assert reads == {"get_gpu_status", "list_workloads", "plan"}
    destructive = {n for n, a in ann.items() if a["destructiveHint"]}
    assert destructive == {"release_gpu", "stop_workload"}
    assert all(a["idempotentHint"] for a in ann.values())


def test_update_gpu_timeout_arguments(daemon):
    d = daemon()
    url = d.url + "/mcp"
    r = requests.post(url, json=rpc("initialize", protocolVersion="2025-11-25", capabilities={},
                                    clientInfo={"name": "t", "version": "1"}), timeout=10)
    h = {"Mcp-Session-Id": r.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}

    def call(args):
        r = requests.post(url, json=rpc("tools/call", name="update_gpu_timeout", arguments=args),
                          headers=h, timeout=10)
        return r.json()["result"]

    res = call({"timeout_seconds": 300, "timeout": 300})
    assert res["isError"] and "expected one of them" in res["content"][0]["text"]
    res = call({})
    assert res["isError"]
    assert res["content"][0]["text"] == "update_gpu_timeout: timeout_seconds or timeout: required"
    res = call({"timeout_seconds": "soon"})
    assert res["isError"] and "timeout_seconds" in res["content"][0]["text"]
    # the REST route takes either name too
    r = d.post("/api/gpu/timeout", json={"timeout_seconds": 120})
    assert r.status_code == 200 and r.json() == {
        "success": True, "message": "idle release timeout set to 2m", "timeout": 120.0}


def test_revision_2025_03_26_is_accepted(daemon):
    """What many clients still send: initialize answers with it, and the
    session serves without the MCP-Protocol-Version header (2025-06-18 on)."""
    d = daemon()
    url = d.url + "/mcp"
    r = requests.post(url, json=rpc("initialize", protocolVersion="2025-03-26", capabilities={},
                                    clientInfo={"name": "t", "version": "1"}), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["protocolVersion"] == "2025-03-26"
    h = {"Mcp-Session-Id": r.headers["Mcp-Session-Id"]}
    r = requests.post(url, json=rpc("notifications/initialized", id=None), headers=h, timeout=10)
    assert r.status_code == 202
    r = requests.post(url, json=rpc("tools/list"), headers=h, timeout=10)
    assert r.status_code == 200 and len(r.json()["result"]["tools"]) == 10
    r = requests.post(url, json=rpc("tools/call", name="get_gpu_status", arguments={}),
                      headers={**h, "MCP-Protocol-Version": "2025-03-26"}, timeout=10)
    assert r.status_code == 200 and r.json()["result"]["isError"] is False
    # bad arguments are a protocol error before 2025-11-25
    r = requests.post(url, json=rpc("tools/call", name="start_workload", arguments={}),
                      headers=h, timeout=10)
    assert r.json()["error"]["code"] == -32602
