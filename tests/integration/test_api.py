# SPDX-License-Identifier: MIT
"""REST API against the real vramd: the lifecycle through HTTP, refused calls
that change nothing, the idle timers, logs, events and the TTS-style routes."""
import json
import os
import signal
import socket
import threading
import time

import requests

from conftest import pid_alive, stable_view, wait_for


def error_of(r, status, code=None):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_healthz_and_status(daemon):
    d = daemon()
    assert d.get("/healthz").json() == {"status": "ok"}
    st = d.status()
    assert len(st["gpus"]) == 2
    names = [w["name"] for w in st["workloads"]]
    assert names == ["chat", "embed"]
    for w in st["workloads"]:
        assert w["state"] == "stopped"
    assert d.get("/api/workloads/chat").json()["name"] == "chat"


def test_lifecycle_over_rest(daemon):
    d = daemon()
    r = d.post("/api/workloads/chat/start")
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["workload"] == "chat" and res["action"] == "start" and res["state"] == "ready"
    assert res["seconds"] >= 0.2  # the demo server loads for 200 ms
    w = d.workload("chat")
    assert w["state"] == "ready"
    pid = w["pid"]
    assert pid_alive(pid)
    used = sum(g["memory"]["used"] for g in d.status()["gpus"]) if "memory" in d.status()["gpus"][0] else None

    r = d.post("/api/workloads/chat/offload")
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["state"] == "offloaded"
    assert d.state("chat") == "offloaded"
    if used is not None:
        assert sum(g["memory"]["used"] for g in d.status()["gpus"]) < used

    r = d.post("/api/workloads/chat/restore")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "ready"
    assert d.state("chat") == "ready"

    r = d.post("/api/workloads/chat/stop")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "stopped"
    assert d.state("chat") == "stopped"
    wait_for(lambda: not pid_alive(pid), 5, what="the stopped workload's process to exit")


def test_release_and_no_wait(daemon):
    d = daemon()
    r = d.post("/api/workloads/embed/start?wait=0")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["workload"] == "embed" and body["action"] == "start" and body["accepted"] is True
    d.wait_state("embed", "ready")
    r = d.post("/api/workloads/embed/release")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "stopped"


def test_refused_calls_change_nothing(daemon):
    d = daemon()
    assert d.post("/api/workloads/embed/start").status_code == 200
    before = stable_view(d.status())

    # Bad JSON: where it is wrong.
    JSON = {"Content-Type": "application/json"}
    msg = error_of(d.put("/api/workloads/chat/idle", data='{"offload_after": ', headers=JSON),
                   400, "bad_request")
    assert "invalid JSON at line 1, column" in msg
    msg = error_of(d.put("/api/workloads/chat/idle", data='[1, 2]', headers=JSON), 400, "bad_request")
    assert msg == "the body must be a JSON object"
    # A field of the wrong type, an unknown field: named.
    msg = error_of(d.put("/api/workloads/chat/idle", json={"offload_after": True}), 400)
    assert msg.startswith("offload_after:")
    msg = error_of(d.put("/api/workloads/chat/idle", json={"offload_after": "soon"}), 400)
    assert "offload_after" in msg and '"soon"' in msg
    msg = error_of(d.put("/api/workloads/chat/idle", json={"offload_after": "10m", "sleep": 1}), 400)
    assert msg.startswith('unknown field "sleep"')
    msg = error_of(d.post("/api/workloads/chat/start", data="{nope", headers=JSON), 400)
    assert "invalid JSON" in msg
    msg = error_of(d.post("/api/workloads/chat/start?wait=maybe"), 400)
    assert msg.startswith("wait:")
    # Unknown workload, unknown route, wrong method.
    msg = error_of(d.post("/api/workloads/nope/start"), 404, "not_found")
    assert msg.startswith('no workload named "nope"')
    msg2 = error_of(d.get("/api/workloads/nope"), 404, "not_found")
    assert msg2 == msg
    error_of(d.get("/api/workloads/nope"), 404, "not_found")
    error_of(d.get("/api/workloads/nope/logs"), 404, "not_found")
    error_of(d.put("/api/workloads/nope/idle", json={"offload_after": 5}), 404, "not_found")
    error_of(d.get("/api/nothing-here"), 404, "not_found")
    r = d.get("/api/workloads/chat/start")
    error_of(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == "POST"
    # Wrong state: chat is stopped, so it cannot be offloaded or restored.
    msg = error_of(d.post("/api/workloads/chat/offload"), 409, "wrong_state")
    assert "stopped" in msg
    error_of(d.post("/api/workloads/chat/restore"), 409, "wrong_state")
    # A body over the limit.
    error_of(d.put("/api/workloads/chat/idle", data="x" * (100 * 1024), headers=JSON), 413, "payload_too_large")
    # Compatibility routes refuse the same way.
    error_of(d.post("/api/gpu/timeout", data="{", headers=JSON), 400)
    msg = error_of(d.post("/api/gpu/timeout", json={"timeout": "later"}), 400)
    assert msg.startswith("timeout:")
    error_of(d.post("/api/gpu/timeout", json={"timeout": 5, "workload": "nope"}), 404)
    error_of(d.post("/api/gpu/offload", json={"workload": "nope"}), 404)
    error_of(d.post("/api/gpu/offload", json={"model": "x"}), 400)

    # Past the status text's 100 ms lifetime, so that this reads the manager afresh.
    time.sleep(0.15)
    assert stable_view(d.status()) == before


def test_idle_timeouts(daemon):
    d = daemon()
    r = d.put("/api/workloads/chat/idle", json={"offload_after": "10m", "release_after": 3600})
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["name"] == "chat"
    text = json.dumps(w)
    assert "600" in text and "3600" in text
    # "never" turns a timer off.
    r = d.put("/api/workloads/chat/idle", json={"release_after": "never"})
    assert r.status_code == 200, r.text


def test_idle_offload_happens(daemon):
    d = daemon()
    d.post("/api/workloads/embed/start")
    r = d.put("/api/workloads/embed/idle", json={"offload_after": "1s"})
    assert r.status_code == 200, r.text
    d.wait_state("embed", "offloaded", timeout=10)


def test_logs(daemon):
    d = daemon()
    d.post("/api/workloads/chat/start")
    r = d.get("/api/workloads/chat/logs?tail=50")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    assert len(r.text.splitlines()) <= 50
    r2 = d.get("/api/workloads/chat/logs?tail=1")
    assert len(r2.text.splitlines()) <= 1
    error_of(d.get("/api/workloads/chat/logs?tail=-1"), 400)
    error_of(d.get("/api/workloads/chat/logs?tail=999999"), 400)


def test_kill9_restarts_with_backoff(daemon):
    d = daemon()
    assert d.post("/api/workloads/chat/start").status_code == 200
    pid = d.workload("chat")["pid"]
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # It is noticed, and a new process comes up after the backoff (1 s first).
    w = wait_for(lambda: (lambda w: w if w["state"] == "ready" and w.get("pid") not in (None, pid)
                          else None)(d.workload("chat")), 15, what="chat to be restarted")
    assert time.monotonic() - killed_at >= 0.9
    assert pid_alive(w["pid"])
    assert not pid_alive(pid)


def test_events_stream(daemon):
    d = daemon()
    events = []
    ready = threading.Event()

    def reader():
        with requests.get(d.url + "/api/events", stream=True, timeout=30) as r:
            assert r.status_code == 200
            assert r.headers["Content-Type"] == "text/event-stream"
            ready.set()
            ev = {}
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    ev["event"] = line[7:]
                elif line.startswith("data: "):
                    ev["data"] = json.loads(line[6:])
                elif line == "" and ev:
                    events.append(ev)
                    ev = {}
                    if any(e.get("data", {}).get("to") == "ready" for e in events):
                        return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert ready.wait(5)
    time.sleep(0.1)
    assert d.post("/api/workloads/embed/start").status_code == 200
    t.join(10)
    assert not t.is_alive(), f"no 'ready' event; got {events}"
    states = [(e["data"]["workload"], e["data"]["from"], e["data"]["to"]) for e in events
              if e.get("event") == "state"]
    assert ("embed", "stopped", "starting") in states
    assert ("embed", "starting", "ready") in states
    # The client went away; the daemon still serves.
    assert d.get("/healthz").status_code == 200


def test_client_going_away_does_not_stop_the_action(daemon):
    d = daemon()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"POST /api/workloads/chat/start HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    time.sleep(0.05)
    s.close()
    d.wait_state("chat", "ready")
    assert d.get("/healthz").status_code == 200


def test_compat_routes(daemon):
    d = daemon()
    st = d.get("/api/gpu/status").json()
    assert set(st) == {"chat", "embed"}
    for name, s in st.items():
        assert s["model_name"] == name
        assert s["location"] == "unloaded"
        for k in ("idle_time_seconds", "idle_timeout_seconds", "monitor_running", "gpu_memory"):
            assert k in s, (k, s)

    r = d.post("/api/gpu/timeout", json={"timeout": 300})
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    st = d.get("/api/gpu/status").json()
    assert all(s["idle_timeout_seconds"] == 300 for s in st.values()), st
    r = d.post("/api/gpu/timeout", json={"timeout": 120, "workload": "chat"})
    assert r.status_code == 200, r.text
    st = d.get("/api/gpu/status").json()
    assert st["chat"]["idle_timeout_seconds"] == 120 and st["embed"]["idle_timeout_seconds"] == 300

    d.post("/api/workloads/chat/start")
    assert d.get("/api/gpu/status").json()["chat"]["location"] == "GPU"
    r = d.post("/api/gpu/offload")
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    assert [x["workload"] for x in r.json()["results"]] == ["chat"]
    assert d.get("/api/gpu/status").json()["chat"]["location"] == "CPU"
    r = d.post("/api/gpu/release", json={"workload": "chat"})
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    assert d.get("/api/gpu/status").json()["chat"]["location"] == "unloaded"
    # Nothing to do is not a failure.
    r = d.post("/api/gpu/offload")
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["results"] == []


def test_token_on_tcp_not_on_socket(daemon):
    from conftest import DEFAULT_CONFIG
    cfg = DEFAULT_CONFIG.replace("daemon:\n", "daemon:\n  token: s3cret\n")
    d = daemon(cfg, wait=False)
    wait_for(lambda: os.path.exists(d.sock), 10, what="the control socket")
    wait_for(lambda: d.get("/healthz").status_code in (200, 401), 10, what="vramd to answer")
    error_of(d.get("/api/status"), 401, "unauthorized")
    r = d.get("/api/status", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    d.http.headers["Authorization"] = "Bearer s3cret"
    d.ctl("status", check=0)  # over the socket, no token
    r = d.ctl("status", url=d.url)
    assert r.returncode == 1 and "Authorization" in r.stderr
