# SPDX-License-Identifier: MIT
"""Containers as workloads, with the real podman (runc, cgroupfs, host network).

No registry is reachable, so the image is made here from a root filesystem
(`podman import`): busybox, the directories a program needs, and symbolic
links lib -> usr/lib, lib64 -> usr/lib64. The host's /usr and the build tree
are bind-mounted into it read-only (container.volumes), so that fc-server
(tests/fakecuda, glibc) and the fake CUDA driver run inside as they are. The
hook (libvram.so) and its socket are mounted by vramd itself.

What a user would notice is checked: the workload starts and is healthy
(through the container's port on the host's network), the gateway reaches
it, the hook inside registers under the container's host pid and moves the
fake device memory out and back with the bytes intact, a stop leaves no
container behind (`podman ps -a`), and a container whose process is killed
is restarted.
"""
import os
import shutil
import signal
import subprocess
import tempfile

import pytest
import requests

from conftest import BUILD, Daemon, pid_alive, wait_for

pytestmark = pytest.mark.skipif(shutil.which("podman") is None,
                                reason="podman is not installed (make deps installs podman, "
                                       "runc and busybox-static)")

from test_hook import ASAN_RT, FAKECUDA, MIB, SERVER  # noqa: E402  (fc-server, the fake driver)

BUILD_ABS = os.path.realpath(BUILD)
IMAGE = "localhost/vramd-test-rootfs:1"

# crun fails on this kind of host ("cgroups in hybrid mode"); runc with the
# cgroupfs manager works. vramd's own environment carries it, since its stop
# and rm commands are run with that.
CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  fcs:
    container:
      image: @image@
      runtime: podman
      args: [@server@]
      volumes: ["/usr:/usr:ro", "@build@:@build@:ro"]
      env:
        LD_LIBRARY_PATH: @fakecuda@
        VRAM_HOOK_CONTEXT_MEMORY: 64MiB
        VRAM_FAKE_CONTEXT_MEMORY: 64MiB
        FC_SERVER_MIB: "64"
        ASAN_OPTIONS: detect_leaks=0
        LD_PRELOAD: "@asan_rt@"
        ECHO_PORT: "port ${PORT}"
    gpus: 1
    memory: 1GiB
    health: /health
    offload: hook
    restart: { policy: always, backoff_max: 1s }
""".replace("@image@", IMAGE).replace("@server@", os.path.realpath(SERVER)).replace("@build@", BUILD_ABS).replace(
    "@fakecuda@", os.path.realpath(FAKECUDA)).replace("@asan_rt@", ASAN_RT)


def podman(*args, check=True):
    r = subprocess.run(["podman"] + list(args), capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"podman {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def our_containers():
    """Names of the containers vramd made (running or not)."""
    out = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return [n for n in out if n.startswith("vramd-fcs-")]


@pytest.fixture(scope="module")
def image():
    conf_dir = tempfile.mkdtemp(prefix="vramd-ct-")
    conf = os.path.join(conf_dir, "containers.conf")
    with open(conf, "w") as f:
        f.write(CONTAINERS_CONF)
    old = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = conf
    root = os.path.join(conf_dir, "root")
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc", "usr", "run"):
        os.makedirs(os.path.join(root, d))
    busybox = shutil.which("busybox")
    if busybox:
        shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
        os.symlink("busybox", os.path.join(root, "bin", "sh"))
    os.symlink("usr/lib", os.path.join(root, "lib"))
    os.symlink("usr/lib64", os.path.join(root, "lib64"))
    tar = os.path.join(conf_dir, "root.tar")
    subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True)
    podman("import", tar, IMAGE)
    # a leftover of an earlier run that was killed must not decide anything here
    for n in our_containers():
        podman("rm", "-f", n, check=False)
    yield IMAGE
    podman("rmi", "-f", IMAGE, check=False)  # each run imports it anew: none piles up
    if old is None:
        del os.environ["CONTAINERS_CONF"]
    else:
        os.environ["CONTAINERS_CONF"] = old
    shutil.rmtree(conf_dir, ignore_errors=True)


def hooked(d, pred=lambda p: True):
    """The workload's hooked processes once one registered and pred holds for the list."""
    def ready():
        h = d.workload("fcs")["hook"]
        procs = h["processes"] if h else []
        return procs if procs and pred(procs) else None
    return wait_for(ready, timeout=60, what="the hook inside the container to register")


def inner_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return None


def test_container_workload(daemon, image):
    d = daemon(CONFIG)
    d.ctl("start", "fcs", check=0, timeout=120)
    w = d.workload("fcs")
    assert w["state"] == "ready", w
    port = w["port"]
    runtime_pid = w["pid"]

    # started through the runtime, with a deterministic name and the host's network
    assert our_containers() == ["vramd-fcs-0"]
    ps = open(f"/proc/{runtime_pid}/cmdline", "rb").read().split(b"\0")
    assert ps[0].endswith(b"podman") and b"--network=host" in ps and b"--name=vramd-fcs-0" in ps, ps

    # health on the workload's port, and the gateway in front of it
    assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    r = d.get("/w/fcs/check")
    assert r.status_code == 200 and r.text == f"ok {64 * MIB}", r.text

    # the variables vramd sets are inside, with ${PORT} substituted in the container's env
    env = podman("exec", "vramd-fcs-0", "/usr/bin/env").stdout.splitlines()
    assert f"PORT={port}" in env and f"ECHO_PORT=port {port}" in env, env
    # simulated GPUs: no device is passed in, and the names are the host's, as for a process
    assert "VRAM_WORKLOAD=fcs" in env and "CUDA_VISIBLE_DEVICES=" + ",".join(
        str(g["index"]) for g in w["gpus"]) in env, env
    assert any(e.startswith("LD_PRELOAD=") and "libvram.so" in e for e in env), env

    # the hook inside registered under the container's host pid: one of the workload's own
    procs = hooked(d, lambda ps: ps[0]["used_bytes"] == 128 * MIB)
    assert len(procs) == 1, procs
    hp = procs[0]
    assert hp["connected"] and not hp["external"], hp
    assert hp["pid"] != runtime_pid
    assert inner_pid(hp["pid"]) == 1, "the hooked process is the container's first process"
    assert d.workload("fcs")["hook"]["measured_bytes"] == 128 * MIB
    # and it is the instance's container process, to which GPU memory is accounted
    ct = wait_for(lambda: (lambda c: c if c["pid"] else None)(d.workload("fcs")["instances"][0]["container"]),
                  timeout=30, what="the container's process to be found")
    assert ct == {"name": "vramd-fcs-0", "image": IMAGE, "pid": hp["pid"]}, ct

    # offload and restore through the hook, the bytes intact
    r = d.ctl("offload", "fcs", check=0, timeout=120)
    assert "64MiB" in r.stdout and "via hook" in r.stdout, r.stdout
    w = d.workload("fcs")
    assert w["state"] == "offloaded" and w["pid"] == runtime_pid
    p = [x for x in w["hook"]["processes"] if x["pid"] == hp["pid"]]
    assert p and p[0]["state"] == "offloaded" and p[0]["resident_bytes"] == 64 * MIB, p
    d.ctl("restore", "fcs", check=0, timeout=120)
    assert d.state("fcs") == "ready"
    assert requests.get(f"http://127.0.0.1:{port}/check", timeout=30).text == f"ok {64 * MIB}"

    # the container's output is in the workload's log
    log = d.get("/api/workloads/fcs/logs?tail=200").text
    assert "container vramd-fcs-0 through podman" in log, log
    assert f"fc-server: {64 * MIB} bytes on the device, listening on {port}" in log, log

    # a stop goes through the runtime and leaves no container behind
    d.ctl("stop", "fcs", check=0, timeout=120)
    assert d.state("fcs") == "stopped"
    wait_for(lambda: not our_containers(), timeout=30, what="the container to be removed")
    assert "stopping container vramd-fcs-0 through podman" in d.get(
        "/api/workloads/fcs/logs?tail=200").text


def test_container_crash_restarts(daemon, image):
    d = daemon(CONFIG)
    d.ctl("start", "fcs", check=0, timeout=120)
    first = d.workload("fcs")["pid"]
    procs = hooked(d)
    # the model server inside dies: the runtime's run exits with its status, and vramd restarts it
    os.kill(procs[0]["pid"], signal.SIGKILL)
    w = wait_for(lambda: (lambda w: w if w["state"] == "ready" and w["pid"] != first else None)(
        d.workload("fcs")), timeout=120, what="the container to be restarted")
    assert w["restarts"] >= 1, w
    assert our_containers() == ["vramd-fcs-0"]
    assert d.get("/w/fcs/check").status_code == 200
    hooked(d, lambda ps: any(p["connected"] and p["pid"] != procs[0]["pid"] for p in ps))
    # vramd's own stop (SIGTERM) stops the container through the runtime
    assert d.stop(timeout=60) == 0
    wait_for(lambda: not our_containers(), timeout=30, what="the container to be removed")


def test_container_taken_back_after_vramd_is_killed(daemon, image):
    """vramd killed with SIGKILL: the runtime's run and its container live on; the next vramd
    takes the run back (state file), the hook inside reconnects to the new socket through the
    directory mounted for it, offload and restore work, and a stop still removes the container."""
    d = daemon(CONFIG)
    d.ctl("start", "fcs", check=0, timeout=120)
    runtime_pid = d.workload("fcs")["pid"]
    hp = hooked(d)[0]["pid"]
    os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    d.log.close()
    assert our_containers() == ["vramd-fcs-0"] and pid_alive(runtime_pid) and pid_alive(hp)

    d2 = Daemon(d.workdir, d.config_path, d.port, d.sock, ["--gpus", "2x80GiB"])
    try:
        d2.wait_ready()
        w = d2.wait_state("fcs", "ready", timeout=60)
        assert w["pid"] == runtime_pid, w
        # the same process, back on the new hook socket, and the workload's own (not external)
        procs = hooked(d2, lambda ps: any(p["pid"] == hp and p["connected"] and not p["external"]
                                          for p in ps))
        assert [p["pid"] for p in procs if p["connected"]] == [hp], procs
        r = d2.ctl("offload", "fcs", check=0, timeout=120)
        assert "64MiB" in r.stdout and "via hook" in r.stdout, r.stdout
        d2.ctl("restore", "fcs", check=0, timeout=120)
        assert d2.get("/w/fcs/check").text == f"ok {64 * MIB}"
        d2.ctl("stop", "fcs", check=0, timeout=120)
        wait_for(lambda: not our_containers(), timeout=30, what="the container to be removed")
        assert not pid_alive(runtime_pid)
    finally:
        d2.stop(timeout=60)


def test_container_whose_image_cannot_be_had_fails_with_the_runtimes_words(daemon, image):
    """A wrong image name: the start fails, and the runtime's own error is in the log."""
    cfg = CONFIG.replace(f"image: {IMAGE}", "image: localhost/vramd-no-such-image:1").replace(
        "restart: { policy: always, backoff_max: 1s }", "restart: never")
    d = daemon(cfg)
    r = d.ctl("start", "fcs", timeout=120)
    assert r.returncode != 0, r.stdout
    w = d.wait_state("fcs", "failed", timeout=60)
    assert "exited with status 125" in (w["last_error"] or ""), w["last_error"]
    log = d.get("/api/workloads/fcs/logs?tail=200").text
    assert "localhost/vramd-no-such-image:1" in log, log
    assert not our_containers()


def test_container_of_a_workload_gone_from_the_config_is_stopped(daemon, image):
    """vramd killed, its config then left without the container's workload: the next vramd
    stops the recorded run, and the container with it, through the runtime (its PID 1 does
    not act on the SIGTERM the runtime passes on)."""
    d = daemon(CONFIG)
    d.ctl("start", "fcs", check=0, timeout=120)
    runtime_pid = d.workload("fcs")["pid"]
    os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait()
    d.log.close()
    with open(d.config_path, "w") as f:
        f.write(CONFIG[:CONFIG.index("workloads:")] + "workloads:\n  other:\n"
                "    cmd: [sleep, \"1000\"]\n    gpus: 0\n    health: none\n")
    d2 = Daemon(d.workdir, d.config_path, d.port, d.sock, ["--gpus", "2x80GiB"])
    try:
        d2.wait_ready()
        wait_for(lambda: not our_containers(), timeout=60, what="the container to be removed")
        wait_for(lambda: not pid_alive(runtime_pid), timeout=30, what="the runtime's run to end")
        assert "container vramd-fcs-0 is stopped through" in d2.log_text()
    finally:
        d2.stop(timeout=60)
