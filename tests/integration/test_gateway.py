# SPDX-License-Identifier: MIT
"""The gateway against the real vramd and demo model servers: routing by
model and by name, lazy start, restore after an idle offload, eviction of the
least recently used workload, streaming that passes chunks through as they
come, the queue and concurrency limits, cancellation, and /metrics."""
import json
import re
import socket
import threading
import time

import requests

from conftest import wait_for

DEMO_WL = """
  {name}:
    cmd: [{{demo}}, --port, "${{PORT}}", --model, {name}, --memory, {mem}, --load-time, {load}, --chunks, "{chunks}", --chunk-delay, {delay}]
    gpus: 1
    memory: {mem}
    models: [{name}-model]
    health: /health
{extra}"""


def config(*workloads, idle="{ offload_after: never, release_after: never }"):
    text = f"""
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: {idle}
  stop_grace: 3s
workloads:
"""
    for w in workloads:
        args = dict(mem="4GiB", load="100ms", chunks=4, delay="300ms", extra="")
        args.update(w)
        text += DEMO_WL.format(**args)
    return text


def chat(d, model, stream=False, **kw):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return d.post("/v1/chat/completions", json=body, stream=stream, **kw)


def error_of(r, status):
    assert r.status_code == status, f"{r.status_code} {r.text}"
    body = r.json()
    assert isinstance(body["error"]["message"], str)
    return body["error"]["message"]


def test_models_listed_without_starting(daemon):
    d = daemon(config({"name": "a"}, {"name": "b"}))
    r = d.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in body["data"]] == [
        ("a-model", "model", "a"), ("b-model", "model", "b")]
    assert d.get("/v1/models/b-model").json()["id"] == "b-model"
    assert d.state("a") == "stopped" and d.state("b") == "stopped"
    msg = error_of(chat(d, "nope"), 404)
    assert '"nope"' in msg and "a-model" in msg and "b-model" in msg
    msg = error_of(d.post("/v1/chat/completions", json={"messages": []}), 400)
    assert "model" in msg
    msg = error_of(d.get("/w/zzz/health"), 404)
    assert "zzz" in msg and "a, b" in msg
    assert d.state("a") == "stopped" and d.state("b") == "stopped"


def test_lazy_start_by_model_form_query_and_name(daemon):
    d = daemon(config({"name": "a", "load": "400ms"}, {"name": "b"}, {"name": "c"}))
    t0 = time.monotonic()
    r = chat(d, "a-model")
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 >= 0.4  # it waited for the load
    assert r.json()["model"] == "a"
    assert "vramd" in r.headers["Via"]
    assert d.state("a") == "ready" and d.state("b") == "stopped"
    # A form field routes too (the demo server itself only reads JSON and
    # answers 400 in its own shape: the request got there).
    r = d.post("/v1/completions", data={"model": "b-model", "prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert d.state("b") == "ready" and d.state("c") == "stopped"
    r = d.post("/v1/completions", files={"model": (None, "c-model"), "prompt": (None, "x")})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    assert d.state("c") == "ready"
    r = d.get("/v1/models?model=b-model")
    assert r.status_code == 200  # the list itself, answered by vramd
    r = d.get("/w/b/health")
    assert r.status_code == 200 and r.json()["model"] == "b", r.text
    assert d.workload("a")["in_flight"] == 0


def test_restore_after_idle_offload(daemon):
    d = daemon(config({"name": "a", "extra": "    idle: { offload_after: 300ms, release_after: never }\n"}))
    assert chat(d, "a-model").status_code == 200
    d.wait_state("a", "offloaded", timeout=10)
    t0 = time.monotonic()
    r = chat(d, "a-model")
    assert r.status_code == 200, r.text
    assert d.state("a") == "ready"
    assert time.monotonic() - t0 < 5
    m = scrape(d)
    assert m[("vram_workload_restores_total", (("workload", "a"),))] >= 1
    assert m[("vram_workload_offloads_total", (("workload", "a"),))] >= 1


def test_eviction_of_least_recently_used(daemon):
    # Three 10 GiB workloads on one 24 GiB GPU: two fit.
    d = daemon(config({"name": "a", "mem": "10GiB"}, {"name": "b", "mem": "10GiB"},
                      {"name": "c", "mem": "10GiB"}), gpus="1x24GiB")
    assert chat(d, "a-model").status_code == 200
    assert chat(d, "b-model").status_code == 200
    time.sleep(0.05)
    assert chat(d, "a-model").status_code == 200  # b is now the least recently used
    r = chat(d, "c-model")
    assert r.status_code == 200, r.text
    assert d.state("c") == "ready"
    assert d.state("a") == "ready"
    assert d.state("b") in ("offloaded", "stopped")
    m = scrape(d)
    assert m[("vram_evictions_total", (("workload", "b"),))] == 1
    assert m[("vram_evictions_total", (("workload", "a"),))] == 0


def test_sse_chunks_pass_through_as_they_come(daemon):
    d = daemon(config({"name": "a", "chunks": 4, "delay": "400ms"}))
    assert chat(d, "a-model").status_code == 200  # started
    t0 = time.monotonic()
    r = chat(d, "a-model", stream=True)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    arrivals = []
    for line in r.iter_lines():
        if line.startswith(b"data:"):
            arrivals.append((time.monotonic() - t0, line))
    assert arrivals[-1][1] == b"data: [DONE]"
    events = [a for a in arrivals if a[1] != b"data: [DONE]"]
    assert len(events) == 4
    # The upstream writes one event every 400 ms: each must arrive when written,
    # not when the upstream finishes.
    total = arrivals[-1][0]
    assert total >= 1.2
    assert events[0][0] < total - 1.0, arrivals
    for i in range(1, len(events)):
        assert events[i][0] - events[i - 1][0] > 0.2, arrivals


def test_queue_full_is_503_with_retry_after(daemon):
    d = daemon(config({"name": "a", "load": "1500ms",
                       "extra": "    queue_max: 1\n    queue_timeout: 10s\n"}))
    results = []
    t = threading.Thread(target=lambda: results.append(chat(d, "a-model", timeout=30)))
    t.start()
    wait_for(lambda: scrape(d).get(("vram_gateway_queue_depth", (("workload", "a"),))) == 1,
             what="one request queued")
    r = chat(d, "a-model")
    msg = error_of(r, 503)
    assert r.headers["Retry-After"].isdigit()
    assert "a" in msg and "queue" in msg
    t.join()
    assert results[0].status_code == 200, results[0].text


def test_queue_timeout_and_start_failure_are_503(daemon):
    text = config({"name": "slow", "load": "3s", "extra": "    queue_timeout: 300ms\n"}) + """
  broken:
    cmd: [/nonexistent/model-server, --port, "${PORT}"]
    models: [broken-model]
    health: /health
"""
    d = daemon(text)
    r = chat(d, "slow-model")
    msg = error_of(r, 503)
    assert "slow" in msg and "queue_timeout" in msg and r.headers["Retry-After"]
    r = chat(d, "broken-model")
    msg = error_of(r, 503)
    assert "broken" in msg and r.headers["Retry-After"]


def test_over_max_concurrency_is_429(daemon):
    d = daemon(config({"name": "a", "chunks": 3, "delay": "500ms",
                       "extra": "    max_concurrency: 1\n"}))
    assert chat(d, "a-model").status_code == 200
    r1 = chat(d, "a-model", stream=True)
    assert r1.status_code == 200
    r2 = chat(d, "a-model")
    msg = error_of(r2, 429)
    assert "max_concurrency" in msg
    r1.content  # read to the end
    r1.close()
    wait_for(lambda: d.workload("a")["in_flight"] == 0, what="in_flight 0")
    assert chat(d, "a-model").status_code == 200


def test_client_disconnect_cancels_upstream(daemon):
    d = daemon(config({"name": "a", "chunks": 50, "delay": "200ms"}))
    assert chat(d, "a-model").status_code == 200
    body = json.dumps({"model": "a-model", "stream": True, "messages": []}).encode()
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = s.recv(4096)
    assert b"200 OK" in got
    assert d.workload("a")["in_flight"] == 1
    s.close()
    # 50 chunks take 10 s; the request must end long before.
    wait_for(lambda: d.workload("a")["in_flight"] == 0, timeout=3, what="in_flight 0")
    m = scrape(d)
    assert m[("vram_gateway_requests_total", (("code", "client_closed"), ("workload", "a")))] == 1
    assert chat(d, "a-model").status_code == 200


# ---------------------------------------------------------------- /metrics

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_metrics(text):
    """Checks the text format and returns {(name, sorted label pairs): value}."""
    types, helps, out = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert help_, line
            helps[name] = help_
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, f"second TYPE for {name}"
            types[name] = typ
        else:
            m = SAMPLE.match(line)
            assert m, f"bad sample line: {line!r}"
            name, labels = m.group(1), ()
            if m.group(3):
                pairs = LABEL.findall(m.group(3))
                assert "".join(f'{k}="{v}"{s}' for k, v, s in pairs) == m.group(3), line
                labels = tuple(sorted((k, v) for k, v, _ in pairs))
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            family = name if name in types else base
            assert family in types and family in helps, f"{name} has no TYPE/HELP before it"
            value = float(m.group(4))
            assert (name, labels) not in out, f"duplicate {line}"
            out[(name, labels)] = value
    return out, types


def scrape(d):
    r = d.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(r.text)[0]


def test_metrics_scraped_and_parsed(daemon):
    d = daemon(config({"name": "a"}, {"name": "b"}))
    assert chat(d, "a-model").status_code == 200
    assert chat(d, "nope").status_code == 404
    r = d.get("/metrics")
    values, types = parse_metrics(r.text)
    assert types["vram_gateway_request_duration_seconds"] == "histogram"
    assert types["vram_gateway_requests_total"] == "counter"
    assert types["vram_workload_state"] == "gauge"
    assert values[("vram_gpu_memory_total_bytes", (("gpu", "0"), ("name", "Simulated GPU")))] == 80 * 2**30
    assert values[("vram_workload_state", (("state", "ready"), ("workload", "a")))] == 1
    assert values[("vram_workload_state", (("state", "stopped"), ("workload", "a")))] == 0
    assert values[("vram_workload_state", (("state", "stopped"), ("workload", "b")))] == 1
    assert values[("vram_workload_gpu_memory_bytes", (("workload", "a"),))] == 4 * 2**30
    assert values[("vram_gateway_requests_total", (("code", "2xx"), ("workload", "a")))] == 1
    assert values[("vram_gateway_requests_total", (("code", "4xx"), ("workload", "")))] == 1
    # histogram buckets are cumulative and end with +Inf == _count
    buckets = sorted(((float(dict(l)["le"]), v) for (n, l), v in values.items()
                      if n == "vram_gateway_request_duration_seconds_bucket"
                      and dict(l)["workload"] == "a"))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1][0] == float("inf")
    assert buckets[-1][1] == values[("vram_gateway_request_duration_seconds_count",
                                     (("workload", "a"),))] == 1
    assert values[("vram_workload_in_flight_requests", (("workload", "a"),))] == 0
