# SPDX-License-Identifier: MIT
"""Config reload (POST /api/reload, SIGHUP, vramctl reload) against the real
vramd and demo model servers: a bad file, a change that needs a restart of
vramd and a name clash change nothing; live changes apply to the running
process; a changed command restarts the workload only after the request in
flight has finished, while a request sent meanwhile waits for the new
process; added workloads appear (eager ones start), removed ones stop and
leave status, the gateway and /metrics."""
import os
import signal
import threading
import time

from conftest import wait_for
from test_gateway import chat, config, error_of


def rewrite(d, text):
    from conftest import DEMO
    with open(d.config_path, "w") as f:
        f.write(text.replace("{demo}", DEMO))


def reload_ok(d):
    r = d.post("/api/reload")
    assert r.status_code == 200, r.text
    return r.json()


def pid(d, name):
    return d.workload(name)["pid"]


def test_bad_file_and_fixed_keys_change_nothing(daemon):
    text = config({"name": "a"}, {"name": "b"})
    d = daemon(text)
    assert chat(d, "a-model").status_code == 200
    before = (pid(d, "a"), d.state("b"))
    # a YAML error: the loader's message with file:line:col
    rewrite(d, text + "  c:\n    cmd: [x]\n    memory: lots\n")
    msg = error_of(d.post("/api/reload"), 400)
    assert "vramd.yaml:" in msg and "workloads.c.memory" in msg and "nothing was changed" in msg
    assert d.post("/api/reload").json()["error"]["code"] == "bad_config"
    # a key only a restart of vramd applies
    rewrite(d, text.replace("daemon:\n", "daemon:\n  port_range_start: 31000\n"))
    r = d.post("/api/reload")
    msg = error_of(r, 409)
    assert r.json()["error"]["code"] == "needs_restart"
    assert "daemon.port_range_start" in msg and "restart of vramd" in msg
    # vramctl says the same and fails
    c = d.ctl("reload", check=1)
    assert "daemon.port_range_start" in c.stderr
    assert (pid(d, "a"), d.state("b")) == before
    assert [w["name"] for w in d.status()["workloads"]] == ["a", "b"]
    assert "Config reload refused" in d.log_text()
    # the file fixed: it applies (nothing changed)
    rewrite(d, text)
    rep = reload_ok(d)
    assert rep == {"added": [], "removed": [], "changed": [], "restarting": [], "unchanged": 2}
    assert pid(d, "a") == before[0]


def test_adhoc_name_clash_is_refused(daemon):
    text = config({"name": "a"})
    d = daemon(text)
    r = d.sock_request("POST", "/api/workloads", json={"name": "b", "cmd": ["sleep", "30"]})
    assert r.status_code in (200, 201, 202), r.text
    rewrite(d, config({"name": "a"}, {"name": "b"}))
    msg = error_of(d.post("/api/reload"), 409)
    assert "ad-hoc" in msg and "workloads.b" in msg and "vramd.yaml:" in msg
    assert d.workload("b")["adhoc"] is True
    assert d.sock_request("DELETE", "/api/workloads/b").status_code in (200, 202)


def test_live_changes_keep_the_process(daemon):
    d = daemon(config({"name": "a"}))
    assert chat(d, "a-model").status_code == 200
    p = pid(d, "a")
    rewrite(d, config({"name": "a", "extra": "    priority: 7\n    max_concurrency: 3\n"
                                             "    idle: { offload_after: 10m }\n"}).replace(
        "models: [a-model]", "models: [a-model, a-alias]"))
    rep = reload_ok(d)
    assert rep["changed"] == [{"workload": "a", "applies": "now",
                               "keys": "idle.offload_after, priority, models, max_concurrency"}]
    assert rep["restarting"] == []
    w = d.workload("a")
    assert w["pid"] == p and w["state"] == "ready" and w["pending"] is None
    assert w["priority"] == 7 and w["timeouts"]["offload_after_seconds"] == 600
    assert w["models"] == ["a-model", "a-alias"]
    # the new model name routes at once, to the same process
    r = chat(d, "a-alias")
    assert r.status_code == 200 and r.json()["model"] == "a"
    assert pid(d, "a") == p


def test_changed_command_restarts_after_the_request_in_flight(daemon):
    d = daemon(config({"name": "a", "chunks": 5, "delay": "400ms"}))
    assert chat(d, "a-model").status_code == 200
    old = pid(d, "a")
    got = {}

    def stream():
        r = chat(d, "a-model", stream=True)
        got["status"] = r.status_code
        got["lines"] = [l for l in r.iter_lines() if l.startswith(b"data:")]
        got["end"] = time.monotonic()

    t = threading.Thread(target=stream)
    t.start()
    wait_for(lambda: d.workload("a")["in_flight"] == 1, 5, what="the stream in flight")
    rewrite(d, config({"name": "a", "chunks": 5, "delay": "400ms", "load": "300ms"}))
    rep = reload_ok(d)
    assert rep["restarting"] == ["a"]
    assert rep["changed"] == [{"workload": "a", "keys": "cmd", "applies": "restart"}]
    w = d.workload("a")
    assert w["pending"] == {"action": "restart", "keys": "cmd"}
    assert w["pid"] == old and w["state"] == "ready"
    # a request sent now waits for the new process
    t0 = time.monotonic()
    r = chat(d, "a-model")
    assert r.status_code == 200, r.text
    t.join(10)
    assert got["status"] == 200
    assert got["lines"][-1] == b"data: [DONE]" and len(got["lines"]) == 6  # all 5 chunks
    assert time.monotonic() - t0 >= 0.3  # the new process loaded first
    assert got["end"] <= time.monotonic()
    w = d.workload("a")
    assert w["pid"] != old and w["state"] == "ready" and w["pending"] is None
    assert "a: now runs with the new config (cmd)" in d.log_text()
    wait_for(lambda: not os.path.exists(f"/proc/{old}"), 5, what="the old process to exit")


def test_stopped_workload_takes_new_settings_at_once(daemon):
    d = daemon(config({"name": "a"}))
    rewrite(d, config({"name": "a", "mem": "6GiB"}))
    rep = reload_ok(d)
    assert rep["changed"] == [{"workload": "a", "keys": "cmd, memory", "applies": "now"}]
    assert d.state("a") == "stopped" and d.workload("a")["pending"] is None
    assert chat(d, "a-model").status_code == 200
    assert d.workload("a")["memory"]["declared"] == "6GiB"


def test_added_and_removed_workloads(daemon):
    d = daemon(config({"name": "a"}, {"name": "b"}))
    assert chat(d, "b-model").status_code == 200
    b_pid = pid(d, "b")
    rewrite(d, config({"name": "a"}, {"name": "c", "extra": "    start: eager\n"},
                      {"name": "e"}))
    rep = reload_ok(d)
    assert rep["added"] == ["c", "e"] and rep["removed"] == ["b"]
    d.wait_state("c", "ready")
    assert d.state("e") == "stopped"
    wait_for(lambda: [w["name"] for w in d.status()["workloads"]] == ["a", "c", "e"], 10,
             what="b to leave status")
    wait_for(lambda: not os.path.exists(f"/proc/{b_pid}"), 5, what="b's process to exit")
    # gateway: the removed name is unknown, the new ones route
    msg = error_of(chat(d, "b-model"), 404)
    assert "b-model" in msg
    assert error_of(d.get("/w/b/health"), 404)
    assert [m["id"] for m in d.get("/v1/models").json()["data"]] == ["a-model", "c-model", "e-model"]
    r = chat(d, "e-model")
    assert r.status_code == 200 and r.json()["model"] == "e"
    # metrics follow
    text = d.get("/metrics").text
    assert 'workload="e"' in text and 'workload="b"' not in text
    # API actions on the removed name: unknown
    assert d.post("/api/workloads/b/start").status_code == 404


def test_sighup_and_vramctl(daemon):
    d = daemon(config({"name": "a"}))
    rewrite(d, config({"name": "a", "extra": "    priority: 3\n"}, {"name": "z"}))
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: d.get("/api/workloads/z").status_code == 200, 5, what="z after SIGHUP")
    assert d.workload("a")["priority"] == 3
    assert "Config reloaded" in d.log_text()
    rewrite(d, config({"name": "a", "extra": "    priority: 4\n"}))
    c = d.ctl("reload", check=0)
    assert "removed (stops once its requests end): z" in c.stdout
    assert "a: priority changed: applied" in c.stdout
    assert "reloaded: 0 added, 1 removed, 1 changed, 0 unchanged" in c.stdout
