# SPDX-License-Identifier: MIT
"""The state file (<state_dir>/state.json): written when what it records
changes, read on start (one line for a bad file), removed on SIGTERM."""
import json
import os
import signal
import stat
import tempfile

from conftest import wait_for


def state_path(d):
    return os.path.join(getattr(d, "state_dir", os.path.join(d.workdir, "state")), "state.json")


def read_state(d):
    try:
        with open(state_path(d)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def workload_of(sf, name):
    for w in (sf or {}).get("workloads", []):
        if w.get("name") == name:
            return w
    return None


def wait_recorded(d, name, pred, what):
    def check():
        w = workload_of(read_state(d), name)
        return w if w is not None and pred(w) else None
    return wait_for(check, 5, what=what)


def test_state_file_records_instances_idle_and_offload(daemon):
    d = daemon()
    r = d.post("/api/workloads/chat/start")
    assert r.status_code == 200, r.text
    w = d.workload("chat")
    pid = w["pid"]
    r = d.put("/api/workloads/chat/idle", json={"offload_after": "10m"})
    assert r.status_code == 200, r.text

    rec = wait_recorded(d, "chat",
                        lambda w: w.get("instances") and "offload_after_ms" in w["runtime"],
                        "the state file to record chat and its idle timer")
    st = os.stat(state_path(d))
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    text = json.dumps(rec)
    inst = rec["instances"][0]
    assert inst["pid"] == pid, text
    assert inst["port"] == w["instances"][0]["port"] and inst["port"] > 0, (text, w)
    assert inst["state"] == "ready", text
    assert inst["pgid"] == os.getpgid(pid) and inst["start_ticks"] > 0, text
    assert len(inst["gpus"]) == 1 and inst["gpus"][0].startswith("GPU-"), text
    assert inst["engine"] == "sim", text
    assert rec["runtime"] == {"offload_after_ms": 600000}, text
    # embed never started: listed without processes
    assert not (workload_of(read_state(d), "embed") or {}).get("instances"), read_state(d)

    r = d.post("/api/workloads/chat/offload")
    assert r.status_code == 200 and r.json()["state"] == "offloaded", r.text
    rec = wait_recorded(d, "chat",
                        lambda w: w.get("instances") and w["instances"][0]["state"] == "offloaded",
                        "the state file to record chat as offloaded")
    assert rec["instances"][0]["pid"] == pid, rec
    assert rec["instances"][0]["offloaded_bytes"] > 0, rec

    assert d.stop() == 0
    assert not os.path.exists(state_path(d)), "a clean stop leaves a state file behind"
    assert not os.path.exists(state_path(d) + ".tmp")


def test_corrupt_state_file_is_ignored_with_one_line(daemon):
    # the state directory with a truncated file in it, before vramd starts
    state_dir = tempfile.mkdtemp(prefix="vramd-sf-")
    with open(os.path.join(state_dir, "state.json"), "w") as f:
        f.write('{"format": "vramd-state", "version": 1, "workloads": [')
    d = daemon(extra_args=["--state-dir", state_dir])
    d.state_dir = state_dir
    wait_for(lambda: "Ignoring the state file" in d.log_text(), 5,
             what="the line about the corrupt state file")
    r = d.post("/api/workloads/embed/start")
    assert r.status_code == 200 and r.json()["state"] == "ready", r.text
    wait_recorded(d, "embed", lambda w: bool(w.get("instances")),
                  "the corrupt file to be replaced by a good one")
    log = d.log_text()
    lines = [l for l in log.splitlines() if "Ignoring the state file" in l]
    assert len(lines) == 1, log
    assert "starting clean" in lines[0] and "state.json" in lines[0], lines[0]
    assert d.stop() == 0
    assert not os.path.exists(state_path(d))


def test_requests_do_not_rewrite_the_state_file(daemon):
    d = daemon()
    r = d.post("/api/workloads/embed/start")
    assert r.status_code == 200, r.text
    wait_recorded(d, "embed", lambda w: bool(w.get("instances")), "embed to be recorded")
    import time
    time.sleep(1.2)  # two ticks: whatever the start left to write is written
    before = os.stat(state_path(d))
    for _ in range(20):
        r = d.get("/w/embed/health")
        assert r.status_code == 200, r.text
    time.sleep(1.2)
    after = os.stat(state_path(d))
    # each write renames a new file over the old one: a new inode
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_failed_write_warns_once_and_is_retried_on_the_next_change(daemon):
    d = daemon()
    # the temporary file's name taken by a directory: every write fails
    os.mkdir(state_path(d) + ".tmp")
    r = d.post("/api/workloads/embed/start")
    assert r.status_code == 200, r.text
    wait_for(lambda: "Could not write the state file" in d.log_text(), 5,
             what="the warning about the failed write")
    r = d.post("/api/workloads/chat/start")
    assert r.status_code == 200, r.text
    os.rmdir(state_path(d) + ".tmp")
    r = d.post("/api/workloads/chat/offload")
    assert r.status_code == 200, r.text
    wait_recorded(d, "chat", lambda w: w.get("instances") and w["instances"][0]["state"] == "offloaded",
                  "the next change to be written")
    lines = [l for l in d.log_text().splitlines() if "Could not write the state file" in l]
    assert len(lines) == 1, lines
