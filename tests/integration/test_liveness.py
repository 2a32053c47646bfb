# SPDX-License-Identifier: MIT
"""Liveness checks of ready workloads, against the real vramd and demo model
servers: a hung (SIGSTOPped) workload is found within its interval ×
failures, fails with the reason, is killed although it is stopped, restarts
under its policy and serves again; a workload whose health route fails while
it streams an answer is kept while the stream progresses, and fails once the
stream stalls; a reload changes the interval of a running workload at once."""
import json
import os
import signal
import threading
import time

import requests

from conftest import DEMO, pid_alive, wait_for
from test_gateway import chat

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 5s
workloads:
  a:
    cmd: [{{demo}}, --port, "${{PORT}}", --model, a, --memory, 4GiB, --load-time, 100ms, --chunks, "{chunks}", --chunk-delay, {delay}{busy}]
    gpus: 1
    memory: 4GiB
    models: [a-model]
    health: {{ path: /health, interval: {interval}, timeout: {timeout}, failures: {failures} }}
    restart: {{ policy: {policy}, backoff_max: 1s }}
"""


def config(interval="500ms", timeout="300ms", failures=3, policy="on-failure", chunks=4,
           delay="100ms", busy=False):
    return CONFIG.format(interval=interval, timeout=timeout, failures=failures, policy=policy,
                         chunks=chunks, delay=delay, busy=", --busy-health" if busy else "")


def watch_states(d, name):
    """Records every state change of name from /api/events (list of (to, reason))."""
    seen = []
    r = d.http.get(d.url + "/api/events", stream=True, timeout=60)
    assert r.status_code == 200, r.text

    def run():
        try:
            for line in r.iter_lines():
                if line.startswith(b"data:"):
                    ev = json.loads(line[5:])
                    if ev.get("workload") == name:
                        seen.append((ev.get("to"), ev.get("reason", "")))
        except Exception:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return seen, r


def test_sigstopped_workload_is_failed_and_restarted(daemon):
    d = daemon(config(interval="500ms", timeout="300ms", failures=3))
    assert chat(d, "a-model").status_code == 200
    p1 = d.workload("a")["pid"]
    # checks run while it is ready, and status says how they went
    lv = wait_for(lambda: (lambda l: l if l and l["last_check"] == "ok" else None)(
        d.workload("a")["liveness"]), timeout=5, what="a first liveness check")
    assert lv["failures"] == 0 and lv["failures_max"] == 3 and lv["interval_seconds"] == 0.5

    os.kill(p1, signal.SIGSTOP)
    t0 = time.monotonic()
    w = wait_for(lambda: (lambda w: w if w["state"] == "failed" else None)(d.workload("a")),
                 timeout=10, interval=0.02, what="a to fail")
    took = time.monotonic() - t0
    # found within interval × failures + timeout (+ scheduling slack), 1.8 s here
    assert took < 1.8 + 1.0, took
    assert "health check GET /health of replica 0" in w["last_error"], w
    assert f"(pid {p1}) failed 3 times in a row, 500ms apart" in w["last_error"], w
    assert "no answer on port" in w["last_error"] and "within 300ms" in w["last_error"], w
    assert w["liveness"]["failures"] == 3
    # stopped as it is, it is still ended by SIGTERM, well before the 5 s grace
    wait_for(lambda: not pid_alive(p1), timeout=3, what="the stopped process to be ended")
    assert "signal 15: shutting down" in d.get("/api/workloads/a/logs").text
    # restarted under its policy, and serving again
    w = d.wait_state("a", "ready", timeout=10)
    assert w["pid"] != p1 and w["restarts"] == 1
    r = chat(d, "a-model")
    assert r.status_code == 200, r.text
    assert "a: ready -> failed: health check GET /health" in d.log_text()


def test_restart_never_stays_failed(daemon):
    d = daemon(config(interval="300ms", timeout="200ms", failures=1, policy="never"))
    assert chat(d, "a-model").status_code == 200
    p1 = d.workload("a")["pid"]
    os.kill(p1, signal.SIGSTOP)
    w = d.wait_state("a", "failed", timeout=5)
    assert "failed 1 time in a row" in w["last_error"], w
    wait_for(lambda: not pid_alive(p1), timeout=3, what="the stopped process to be ended")
    time.sleep(1.5)
    w = d.workload("a")
    assert w["state"] == "failed" and w["restarts"] == 0 and w["pid"] is None


def read_stream(r, on_chunk=None):
    """The data: lines of an SSE response, calling on_chunk(i) after each."""
    chunks = []
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            chunks.append(line[6:])
            if on_chunk:
                on_chunk(len(chunks))
    return chunks


def test_progressing_stream_keeps_a_workload_whose_health_fails(daemon):
    # /health answers 503 while it streams; 16 chunks 250 ms apart: 4 s of failing checks,
    # far past interval × failures (600 ms) and the 3 s progress window
    d = daemon(config(interval="300ms", timeout="200ms", failures=2, chunks=16, delay="250ms",
                      busy=True))
    assert chat(d, "a-model").status_code == 200
    p1 = d.workload("a")["pid"]
    states, ev = watch_states(d, "a")
    held = []

    def look(i):
        lv = d.workload("a")["liveness"]
        held.append((lv["failures"], lv["held"], lv["last_check"]))

    t0 = time.monotonic()
    r = chat(d, "a-model", stream=True)
    assert r.status_code == 200
    chunks = read_stream(r, look)
    assert time.monotonic() - t0 >= 3.5
    assert len(chunks) == 17 and chunks[-1] == b"[DONE]", chunks
    # its checks failed all along, past the limit, and it was kept
    assert max(f for f, _, _ in held) >= 5, held
    assert any(h for _, h, _ in held), held
    assert any("GET /health answered HTTP 503" in (c or "") for _, _, c in held), held
    w = d.workload("a")
    assert w["state"] == "ready" and w["pid"] == p1 and w["restarts"] == 0, w
    # the stream over, /health passes again and the count starts over
    wait_for(lambda: d.workload("a")["liveness"]["failures"] == 0, timeout=3,
             what="the checks to pass again")
    assert d.workload("a")["liveness"]["held"] is False
    assert states == [], states
    ev.close()


def test_stalled_stream_does_not_keep_a_hung_workload(daemon):
    d = daemon(config(interval="300ms", timeout="200ms", failures=2, chunks=40, delay="200ms"))
    assert chat(d, "a-model").status_code == 200
    p1 = d.workload("a")["pid"]
    r = chat(d, "a-model", stream=True, timeout=30)
    assert r.status_code == 200
    lines = r.iter_lines()
    got = 0
    for line in lines:
        if line.startswith(b"data: "):
            got += 1
            if got == 3:
                break
    os.kill(p1, signal.SIGSTOP)  # mid-stream: a request in flight, no more bytes
    t0 = time.monotonic()
    assert d.workload("a")["in_flight"] == 1
    w = wait_for(lambda: (lambda w: w if w["state"] == "failed" else None)(d.workload("a")),
                 timeout=15, interval=0.05, what="a to fail")
    took = time.monotonic() - t0
    # kept past interval × failures + timeout (0.8 s) while its last bytes are recent (the
    # gateway reports a response's first bytes, then bytes once a second); once the 3 s progress
    # window after them has passed, the next failed check ends it
    assert 2.0 <= took < 3.0 + 0.6 + 1.5, took
    assert "with requests in flight but no response bytes within 3s" in w["last_error"], w
    # the client's stream is cut rather than left hanging
    try:
        rest = b"".join(line for line in lines)
    except requests.exceptions.ChunkedEncodingError:
        rest = b""
    assert b"[DONE]" not in rest
    wait_for(lambda: not pid_alive(p1), timeout=3, what="the stopped process to be ended")
    d.wait_state("a", "ready", timeout=10)
    assert chat(d, "a-model").status_code == 200


def test_reload_changes_the_interval_at_once(daemon):
    d = daemon(config(interval="1h", timeout="300ms", failures=1))
    assert chat(d, "a-model").status_code == 200
    p1 = d.workload("a")["pid"]
    assert d.workload("a")["liveness"]["interval_seconds"] == 3600
    with open(d.config_path, "w") as f:
        f.write(config(interval="300ms", timeout="300ms", failures=1).replace("{demo}", DEMO))
    r = d.post("/api/reload")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert rep["changed"] == [{"workload": "a", "keys": "health", "applies": "now"}], rep
    assert rep["restarting"] == []
    w = d.workload("a")
    assert w["pid"] == p1 and w["liveness"]["interval_seconds"] == 0.3
    # checked at the new interval right away, not after the hour left of the old one
    wait_for(lambda: d.workload("a")["liveness"]["last_check"] == "ok", timeout=3,
             what="a check at the new interval")
    os.kill(p1, signal.SIGSTOP)
    t0 = time.monotonic()
    w = d.wait_state("a", "failed", timeout=5)
    assert time.monotonic() - t0 < 0.3 + 0.3 + 1.0
    assert "failed 1 time in a row, 300ms apart" in w["last_error"], w
    d.wait_state("a", "ready", timeout=10)
