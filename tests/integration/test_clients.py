# SPDX-License-Identifier: MIT
"""What clients of other tools expect of vramd: the token as X-Api-Key (what
Anthropic's SDKs send), /healthz open for liveness probes while a token
guards the rest, model aliases rewritten to the name the model server knows,
readiness by the model server's own health route, and a stable
/api/gpu/status shape."""
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import wait_for

ECHO = os.path.join(os.path.dirname(__file__), "echo_server.py")

CONFIG = f"""
daemon:
{{daemon}}gpus:
  reserve: 0
defaults:
  idle: {{{{ offload_after: never, release_after: never }}}}
  stop_grace: 3s
workloads:
  echo:
    cmd: [{sys.executable}, {ECHO}, "${{{{PORT}}}}"]
    gpus: 1
    memory: 1GiB
    models:
      - echo-model
      - {{{{ name: chat, upstream: Qwen/Qwen2.5-7B-Instruct }}}}
      - {{{{ name: "ünï", upstream: "real \\"quoted\\" ü" }}}}
    health: {{{{ tcp: true }}}}
"""


def config(daemon_extra="  log_level: debug\n"):
    return CONFIG.format(daemon=daemon_extra)


def raw(d, data, timeout=20):
    """Sends data on a fresh TCP connection; returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    s.sendall(data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", 0))
    while len(body) < n:
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    s.close()
    return int(lines[0].split()[1]), headers, body


# ---------------------------------------------------------------- tokens

def test_x_api_key_is_accepted_like_bearer_and_kept_from_the_workload(daemon):
    d = daemon(config("  tokens: [first-token-123456, second-token-654321]\n"), wait=False)
    d.wait_ready()
    for tok in ("first-token-123456", "second-token-654321"):
        r = d.get("/api/status", headers={"x-api-key": tok})
        assert r.status_code == 200, r.text
    r = d.get("/api/status", headers={"X-Api-Key": "wrong-token-000000"})
    assert r.status_code == 401
    err = r.json()["error"]["message"]
    assert "X-Api-Key: <token>" in err and "Authorization: Bearer <token>" in err
    # A wrong Bearer next to a right key is let in: either header may carry it.
    r = d.get("/api/status", headers={"x-api-key": "first-token-123456",
                                      "Authorization": "Bearer nope"})
    assert r.status_code == 200
    # What an Anthropic SDK does: POST /v1/messages with x-api-key. The key
    # reaches vramd only, never the workload.
    r = d.post("/v1/messages", headers={"x-api-key": "second-token-654321"},
               json={"model": "echo-model", "messages": []}, timeout=60)
    assert r.status_code == 200, r.text
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert "x-api-key" not in seen and "authorization" not in seen


def test_healthz_open_for_liveness_with_a_token(daemon):
    d = daemon(config("  token: s3cret-token-abcdef\n"), wait=False)
    d.wait_ready()  # /healthz without a token
    r = d.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert d.get("/healthz?verbose=1").json() == {"status": "ok"}
    # Nothing else is open, not even a path that starts the same.
    for path in ("/api/status", "/healthz/x", "/healthzz", "/metrics", "/v1/models"):
        assert d.get(path).status_code == 401, path
    assert d.post("/healthz").status_code == 401


def test_healthz_closed_when_open_healthz_is_off(daemon):
    d = daemon(config("  token: s3cret-token-abcdef\n  open_healthz: false\n"), wait=False)
    wait_for(lambda: os.path.exists(d.sock), 10, what="the control socket")
    assert d.get("/healthz").status_code == 401
    r = d.get("/healthz", headers={"Authorization": "Bearer s3cret-token-abcdef"})
    assert r.status_code == 200


# ---------------------------------------------------------------- aliases

def test_alias_is_rewritten_on_the_way_up(daemon):
    d = daemon(config())
    body = ('{ "messages": [{"role": "user", "content": "model: chat"}],\n'
            '  "model" :  "chat", "temperature": 0.70, "n": 1e0 }')
    r = d.post("/v1/chat/completions", data=body.encode(),
               headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    seen = r.json()
    want = body.replace('"chat"', '"Qwen/Qwen2.5-7B-Instruct"')
    assert seen["body"] == want  # every other byte as sent
    heads = {k.lower(): v for k, v in seen["headers"]}
    assert int(heads["content-length"]) == len(want.encode())
    # A name that is no alias goes up as written.
    r = d.post("/v1/chat/completions", json={"model": "echo-model"}, timeout=60)
    assert json.loads(r.json()["body"]) == {"model": "echo-model"}
    # The alias is what clients see in /v1/models.
    ids = [m["id"] for m in d.get("/v1/models").json()["data"]]
    assert ids == ["echo-model", "chat", "ünï"]


def test_alias_rewrite_of_a_chunked_body_and_of_escapes(daemon):
    d = daemon(config())
    payload = json.dumps({"model": "ünï", "x": [1, {"model": "inner"}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (payload[:7], payload[7:])) + \
        b"0\r\n\r\n"
    status, _, body = raw(d, b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
                             b"Content-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status == 200, body
    seen = json.loads(body)
    sent = json.loads(seen["body"])
    # only the top-level "model" is the alias's; a nested one is the client's
    assert sent == {"model": 'real "quoted" ü', "x": [1, {"model": "inner"}]}
    heads = {k.lower(): v for k, v in seen["headers"]}
    assert "transfer-encoding" not in heads
    assert int(heads["content-length"]) == len(seen["body"].encode())


def test_alias_in_a_form_body_routes_and_goes_up_unchanged(daemon):
    d = daemon(config())
    r = d.post("/v1/audio/transcriptions", data={"model": "chat"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["body"] == "model=chat"


# ---------------------------------------------------------------- readiness

LOADING = os.path.join(os.path.dirname(__file__), "loading_server.py")


def loading_config(flag, extra_args="", start_timeout="120s"):
    return f"""
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  llm:
    cmd: [{sys.executable}, {LOADING}, "${{PORT}}", {flag}{extra_args}]
    gpus: 1
    memory: 1GiB
    models: [llm-model]
    health: {{ start_timeout: {start_timeout} }}
"""


@pytest.mark.parametrize("no_health", [False, True], ids=["health", "v1-models"])
def test_model_server_is_ready_when_it_says_so_not_when_it_listens(daemon, tmp_path, no_health):
    flag = tmp_path / "loaded"
    d = daemon(loading_config(flag, ", --no-health" if no_health else ""))
    assert d.post("/api/workloads/llm/start?wait=0").status_code in (200, 202)
    # it listens and answers 503 "loading": vramd keeps it starting
    wait_for(lambda: os.path.exists(f"{flag}.hits") and
             open(f"{flag}.hits").read().count("\n") >= 3, 30, what="health probes")
    assert d.state("llm") == "starting"
    hits = open(f"{flag}.hits").read().split()
    assert "/health" in hits
    assert ("/v1/models" in hits) == no_health  # a 503 on /health is believed
    # a request meanwhile waits for the model instead of getting the 503
    out = {}
    t = threading.Thread(target=lambda: out.update(r=d.post(
        "/v1/chat/completions", json={"model": "llm-model"}, timeout=60)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    flag.write_text("")
    d.wait_state("llm", "ready", timeout=30)
    t.join(30)
    assert out["r"].status_code == 200 and out["r"].json() == {"answer": "hello"}


# ---------------------------------------------------------------- compat status

def test_gpu_status_keeps_one_gpu_memory_shape(daemon):
    d = daemon()  # chat (20GiB) and embed, on two simulated 80GiB GPUs

    def shape(st):
        return {name: {gpu: sorted(v) for gpu, v in w["gpu_memory"].items()}
                for name, w in st.items()}

    before = d.get("/api/gpu/status").json()
    every_gpu = {"GPU_0": ["allocated_gb", "reserved_gb", "total_gb"],
                 "GPU_1": ["allocated_gb", "reserved_gb", "total_gb"]}
    assert shape(before) == {"chat": every_gpu, "embed": every_gpu}
    assert before["chat"]["gpu_memory"]["GPU_0"] == {"allocated_gb": 0.0, "reserved_gb": 0.0,
                                                     "total_gb": 80.0}
    assert d.post("/api/workloads/chat/start").status_code == 200
    after = d.get("/api/gpu/status").json()
    assert shape(after) == shape(before)
    gpu = f"GPU_{d.workload('chat')['gpus'][0]['index']}"
    assert after["chat"]["gpu_memory"][gpu]["reserved_gb"] == 20.0
    assert after["chat"]["gpu_memory"][gpu]["allocated_gb"] > 0
    other = "GPU_1" if gpu == "GPU_0" else "GPU_0"
    assert after["chat"]["gpu_memory"][other]["reserved_gb"] == 0.0
    # offloaded: the same keys, nothing held
    assert d.post("/api/workloads/chat/offload").status_code == 200
    off = d.get("/api/gpu/status").json()
    assert shape(off) == shape(before)
    assert off["chat"]["gpu_memory"][gpu]["reserved_gb"] == 0.0


def test_a_server_without_either_route_says_how_to_check_it(daemon, tmp_path):
    flag = tmp_path / "loaded"
    flag.write_text("")
    d = daemon(loading_config(flag, ", --no-routes", start_timeout="3s"))
    r = d.post("/api/workloads/llm/start")
    w = d.wait_state("llm", "failed", timeout=30)
    assert ("GET /health and GET /v1/models answered HTTP 404: set health: to a path it "
            "has, or tcp") in w["last_error"], (r.text, w["last_error"])
