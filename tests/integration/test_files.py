# SPDX-License-Identifier: MIT
"""The state directory and the files vramd writes are not taken on trust.

An existing state directory was used whatever its owner and mode, and the
default /tmp/vramd-$UID can be made by any user before vramd starts; log
files followed symbolic links, so a planted link received a workload's log.
Now vramd refuses a state directory that is not its own and private, naming
the path and the problem, and opens its files with O_NOFOLLOW: a planted
link gets nothing, and the workload runs on with its output dropped (the
daemon log says so).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import DEFAULT_CONFIG, DEMO, VRAMD, Daemon, free_port, pid_alive, wait_for
from test_output_relay import CONFIG as CHATTY_CONFIG, log_path, read, ticks

NOBODY = 65534


@pytest.fixture
def workdir():
    """A fresh directory with the default config in it; started daemons are stopped at the end."""
    w = tempfile.mkdtemp(prefix="vramd-files-")
    started = []

    def start(config=DEFAULT_CONFIG, wait=True):
        path = os.path.join(w, "vramd.yaml")
        with open(path, "w") as f:
            f.write(config.replace("{demo}", DEMO).replace("{workdir}", w))
        d = Daemon(w, path, free_port(), os.path.join(w, "state", "vramd.sock"),
                   ["--gpus", "2x80GiB"])
        started.append(d)
        if wait:
            d.wait_ready()
        return d

    yield w, start
    for d in started:
        if d.proc.poll() is None:
            assert d.stop() == 0, d.log_text()
        for p in d.seen_pids:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)
    shutil.rmtree(w, ignore_errors=True)


def refused(d):
    """vramd exits 1 without serving; returns its log."""
    assert d.proc.wait(10) == 1, d.log_text()
    return d.log_text()


def test_new_state_directory_is_private(workdir):
    w, start = workdir
    start()
    st = os.lstat(os.path.join(w, "state"))
    assert st.st_mode & 0o7777 == 0o700 and st.st_uid == os.geteuid()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_foreign_owned_state_directory_is_refused(workdir):
    w, start = workdir
    state = os.path.join(w, "state")
    os.mkdir(state, 0o700)
    os.chown(state, NOBODY, NOBODY)
    log = refused(start(wait=False))
    assert (f"Refusing the state directory {state}: owned by uid {NOBODY}, expected 0 "
            f"(vramd's user); remove it or set daemon.state_dir") in log, log
    assert os.listdir(state) == []  # nothing was put in it


def test_group_writable_state_directory_is_refused(workdir):
    w, start = workdir
    state = os.path.join(w, "state")
    os.mkdir(state)
    os.chmod(state, 0o770)
    log = refused(start(wait=False))
    assert (f"Refusing the state directory {state}: writable by group or others (mode 0770), "
            f"expected 0700; remove it or set daemon.state_dir") in log, log


def test_symlink_state_directory_is_refused(workdir):
    w, start = workdir
    elsewhere = os.path.join(w, "elsewhere")
    os.mkdir(elsewhere, 0o700)
    os.symlink(elsewhere, os.path.join(w, "state"))
    log = refused(start(wait=False))
    assert (f"Refusing the state directory {w}/state: is a symbolic link; remove it or set "
            f"daemon.state_dir") in log, log
    assert os.listdir(elsewhere) == []


def test_state_directory_under_a_directory_others_may_write_is_refused(workdir):
    w, start = workdir
    os.chmod(w, 0o777)  # anyone could rename the state directory away and put theirs there
    log = refused(start(wait=False))
    assert (f"Refusing the state directory {w}/state: its parent {w} is writable by group or "
            f"others (mode 0777) without the sticky bit, so they could put another directory in "
            f"its place; set daemon.state_dir to a directory elsewhere") in log, log


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="runs vramd as another user")
def test_default_tmp_state_directory_made_by_another_user_is_refused():
    # vramd as nobody, without XDG_RUNTIME_DIR: its default is /tmp/vramd-65534, which
    # root (here, the other user) made first
    default = f"/tmp/vramd-{NOBODY}"
    if os.path.lexists(default):
        pytest.skip(f"{default} exists already")
    w = tempfile.mkdtemp(prefix="vramd-files-")
    try:
        os.chmod(w, 0o755)
        config = os.path.join(w, "vramd.yaml")
        with open(config, "w") as f:
            f.write("workloads: {}\n")
        os.chmod(config, 0o644)
        os.mkdir(default, 0o700)
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            VRAMD, "--config", config, "--listen", f"127.0.0.1:{free_port()}",
                            "--gpus", "1x80GiB"], capture_output=True, text=True, timeout=20,
                           env=env)
        assert r.returncode == 1, r.stderr
        assert (f"Refusing the state directory {default}: owned by uid 0, expected {NOBODY} "
                f"(vramd's user); remove it or set daemon.state_dir") in r.stderr, r.stderr
        assert os.listdir(default) == []
    finally:
        shutil.rmtree(default, ignore_errors=True)
        shutil.rmtree(w, ignore_errors=True)


def test_planted_symlink_log_is_not_followed(workdir):
    w, start = workdir
    victim = os.path.join(w, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    logs = os.path.join(w, "state", "logs")
    os.makedirs(logs)
    os.chmod(os.path.join(w, "state"), 0o700)
    os.symlink(victim, os.path.join(logs, "chat.log"))

    d = start()
    # the workload still runs; its output is dropped, and the daemon log says why
    r = d.ctl("start", "chat", check=0)
    assert d.state("chat") == "ready", r.stdout
    assert (f"Failed to open the log {logs}/chat.log: is a symbolic link (not followed); "
            f"chat's output is dropped") in d.log_text()
    d.ctl("stop", "chat", check=0)  # the demo server has said what it says at start and stop
    assert read(victim) == "precious\n"
    assert os.path.islink(os.path.join(logs, "chat.log"))
    # the log route does not read through the link either
    r = d.get("/api/workloads/chat/logs")
    assert r.status_code == 200 and "precious" not in r.text, r.text


def test_daemon_log_symlink_is_not_followed(workdir):
    w, start = workdir
    victim = os.path.join(w, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.symlink(victim, os.path.join(w, "daemon.log"))
    d = start(DEFAULT_CONFIG.replace("daemon:\n", "daemon:\n  log: {workdir}/daemon.log\n"))
    assert (f"Failed to open the log file {w}/daemon.log: is a symbolic link (not followed); "
            f"logging to stderr") in d.log_text()
    d.ctl("start", "embed", check=0)
    assert "embed: stopped -> starting" in d.log_text()  # on stderr instead
    assert read(victim) == "precious\n"


def test_relay_does_not_follow_a_link_planted_after_vramd_dies(workdir):
    # once vramd is gone, the workload's relay opens the log itself (test_output_relay.py)
    w, start = workdir
    d = start(CHATTY_CONFIG)
    d.ctl("start", "chatty", check=0)
    pid = d.workload("chatty")["pid"]
    path = log_path(d, "chatty")
    wait_for(lambda: len(ticks(read(path))) >= 3, what="ticks in the log")
    victim = os.path.join(w, "victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    try:
        os.unlink(path)
        os.symlink(victim, path)
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        d.http.close()
        time.sleep(1)  # about 20 ticks, which the relay now drops
        assert pid_alive(pid), "the workload died with vramd"
        assert read(victim) == "precious\n"
        assert os.path.islink(path)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: not pid_alive(pid), what="the workload to exit")
