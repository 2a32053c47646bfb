# SPDX-License-Identifier: MIT
"""The dashboard at / in a real browser: headless Chromium (Debian's
/usr/bin/chromium) driven by Playwright (tests/browser, pinned), against vramd
on simulated GPUs. The browser steps are in tests/browser/dashboard.mjs; each
test here starts vramd, runs one scenario and checks what it saw. Screenshots
are written to the test's temporary directory.

Also the files themselves over HTTP: the headers a browser relies on (CSP,
ETag, Content-Type), no token needed for them, and the Host rule."""
import json
import os
import shutil
import subprocess

import pytest
import requests

from conftest import SOURCE, free_port

BROWSER_DIR = os.path.join(SOURCE, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# chat loads for 2 s, so that "starting" is on screen long enough to be seen
# by a person (the test records every state the row shows, so it does not
# depend on it); ticker writes a line every 300 ms, for the followed log.
CONFIG = """
daemon:
  log_level: debug
{extra}
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  chat:
    cmd: [{{demo}}, --port, "${{PORT}}", --model, chat, --memory, 20GiB, --load-time, 2s]
    gpus: 1
    memory: 20GiB
    health: /health
  embed:
    cmd: [{{demo}}, --port, "${{PORT}}", --model, embed, --memory, 4GiB, --load-time, 100ms]
    gpus: 1
    memory: 4GiB
    health: /health
  ticker:
    cmd: [sh, -c, 'i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.3; done']
    gpus: 0
    health: none
    start: eager
"""


def config(extra=""):
    return CONFIG.format(extra=extra)


def with_token(daemon, token):
    d = daemon(config(f'  token: "{token}"'), wait=False)
    d.http.headers["Authorization"] = f"Bearer {token}"
    d.wait_ready()
    return d


def run_scenario(cfg, tmp_path, timeout=240):
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed: the browser tests need Node.js (`make deps`)")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium (`make deps`)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        pytest.fail("playwright-core is not installed: run `npm ci --prefix tests/browser` "
                    "(`make test-clients`)")
    cfg = dict(cfg, out=str(tmp_path))
    r = subprocess.run([node, os.path.join(BROWSER_DIR, "dashboard.mjs"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=timeout, cwd=BROWSER_DIR)
    assert r.returncode == 0, f"{cfg['scenario']}: exited with {r.returncode}:\n{r.stdout}\n{r.stderr}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for shot in result.get("screenshots", []):
        assert os.path.getsize(shot) > 10000, f"{shot} is too small to be a page"
    return result


def test_page_files_headers_and_no_token_needed(daemon):
    d = with_token(daemon, "s3cret-token")
    r = requests.get(d.url + "/")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert '<script src="/ui/app.js"' in r.text
    # the API itself still needs the token
    assert requests.get(d.url + "/api/status").status_code == 401
    js = requests.get(d.url + "/ui/app.js")
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("text/javascript")
    etag = js.headers["ETag"]
    again = requests.get(d.url + "/ui/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert requests.get(d.url + "/ui/style.css").headers["Content-Type"].startswith("text/css")
    missing = requests.get(d.url + "/ui/nothing.js")
    assert missing.status_code == 404 and "nothing.js" in missing.json()["error"]["message"]
    # only GET: a POST to / is the API's business, and needs the token
    assert requests.post(d.url + "/").status_code == 401
    # the Host rule holds for the page too (DNS rebinding)
    r = requests.get(d.url + "/", headers={"Host": "attacker.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"


def test_history_and_decisions_routes(daemon):
    d = daemon(config())
    d.post("/api/workloads/chat/start")
    d.wait_state("chat", "ready")
    dec = d.get("/api/decisions").json()
    placed = [x for x in dec["decisions"] if x["kind"] == "placed" and x["workload"] == "chat"]
    assert placed and placed[-1]["bytes_per_gpu"] == 20 * 2**30, dec
    assert len(placed[-1]["gpus"]) == 1 and placed[-1]["reason"].startswith("fits on GPU")
    hist = d.get("/api/history").json()
    assert [g["index"] for g in hist["gpus"]] == [0, 1]
    assert hist["samples"] and len(hist["samples"][-1]["used"]) == 2


def test_dashboard_actions_log_and_screenshot(daemon, tmp_path):
    d = daemon(config())
    d.wait_state("ticker", "ready")
    res = run_scenario({"scenario": "actions", "url": d.url}, tmp_path)
    assert res["start_states"][-3:] == ["stopped", "starting", "ready"]
    assert "offloaded" in res["offload_states"]
    # no script, style or CSP error in the page
    assert res["page_errors"] == [], res["page_errors"]
    # what the page did is what vramd did
    assert d.state("chat") == "stopped" and d.state("embed") == "stopped"
    assert d.workload("embed")["timeouts"]["offload_after_seconds"] == 600


def test_dashboard_with_token(daemon, tmp_path):
    token = "dash-token-0123456789"
    d = with_token(daemon, token)
    res = run_scenario({"scenario": "token", "url": d.url, "token": token}, tmp_path)
    assert res["requests"] > 0
    assert requests.get(d.url + "/api/workloads/chat",
                        headers={"Authorization": f"Bearer {token}"}).json()["state"] == "ready"


def test_cors_from_a_page_on_another_origin(daemon, tmp_path):
    allowed, other = free_port(), free_port()
    d = daemon(config(f'  cors: {{origins: ["http://127.0.0.1:{allowed}"]}}'))
    res = run_scenario({"scenario": "cors", "url": d.url,
                        "pages": {"allowed": allowed, "other": other}}, tmp_path)
    assert res["pages"]["allowed"] == "allowed: 3 workloads", res
    assert res["pages"]["other"].startswith("blocked"), res


def test_decisions_record_an_eviction_with_its_reason(daemon):
    # one 22 GiB GPU: chat (20 GiB) must make room for embed (4 GiB)
    d = daemon(config(), gpus="1x22GiB")
    d.post("/api/workloads/chat/start")
    d.wait_state("chat", "ready")
    r = d.post("/api/workloads/embed/start")
    assert r.status_code == 200, r.text
    d.wait_state("chat", "offloaded")
    dec = d.get("/api/decisions").json()["decisions"]
    placed = [x for x in dec if x["kind"] == "placed" and x["workload"] == "embed"]
    assert placed and placed[0]["evicts"] == ["chat"], dec
    evicted = [x for x in dec if x["kind"] == "evicted"]
    assert evicted and evicted[0]["workload"] == "chat", dec
    assert evicted[0]["reason"] == "evicted to make room for embed", dec
    assert (evicted[0]["from"], evicted[0]["to"]) == ("ready", "offloading")
    # oldest first, numbered in order
    ids = [x["id"] for x in dec]
    assert ids == sorted(ids)
