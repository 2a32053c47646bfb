# SPDX-License-Identifier: MIT
"""The installed vramd: `meson install --destdir` into a temporary root, and
the .deb of packaging/mkdeb.sh installed with dpkg (as root only)."""
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest
import requests

from conftest import BUILD, SOURCE, free_port, wait_for


def run(cmd, env=None, timeout=60):
    return subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)


def meson_prefix():
    out = run(["meson", "introspect", "--buildoptions", BUILD]).stdout
    import json
    return next(o["value"] for o in json.loads(out) if o["name"] == "prefix")


def start_vramd(exe, args, env, state_dir):
    """Starts exe with args on a free port; returns (proc, url) once /healthz answers."""
    port = free_port()
    log = open(os.path.join(os.path.dirname(state_dir), "vramd.log"), "w")
    proc = subprocess.Popen([exe, *args, "--listen", f"127.0.0.1:{port}", "--state-dir", state_dir,
                             "--log-level", "debug"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, f"vramd exited: {proc.returncode}"
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False
    wait_for(up, 10, what="installed vramd /healthz")
    return proc, url


def stop_vramd(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.fixture(scope="module")
def installed():
    """The build tree installed under a temporary DESTDIR: (root, prefix)."""
    root = tempfile.mkdtemp(prefix="vramd-install-")
    r = run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", root], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    yield root, root + meson_prefix()
    shutil.rmtree(root, ignore_errors=True)


def test_install_puts_binaries_hook_examples_unit_and_config_in_place(installed):
    root, prefix = installed
    for rel in ("bin/vramd", "bin/vramctl", "bin/vram-demo-server", "lib/vramd/libvram.so",
                "share/vramd/examples/demo.yaml", "share/doc/vramd/README.md",
                "share/doc/vramd/deploy.md", "lib/systemd/system/vramd.service"):
        assert os.path.exists(os.path.join(prefix, rel)), rel
    r = run([prefix + "/bin/vramd", "--version"])
    assert r.returncode == 0 and r.stdout.startswith("vramd "), r.stdout + r.stderr
    r = run([prefix + "/bin/vramctl", "--help"])
    assert r.returncode == 0 and "Usage" in r.stdout + r.stderr
    # the unit runs the installed binary, not a placeholder
    unit = open(prefix + "/lib/systemd/system/vramd.service").read()
    assert f"ExecStart={meson_prefix()}/bin/vramd" in unit
    # no example names a command inside a build tree
    for name in os.listdir(prefix + "/share/vramd/examples"):
        text = open(os.path.join(prefix, "share/vramd/examples", name)).read()
        assert not re.search(r"cmd: \[\S*build/", text), name
    configs = [p for p in (root + "/etc/vramd/vramd.yaml", prefix + "/etc/vramd/vramd.yaml")
               if os.path.exists(p)]
    assert configs, "no default config installed"
    r = run([prefix + "/bin/vramd", "--check-config", configs[0]])
    assert r.returncode == 0, r.stdout + r.stderr


def test_install_keeps_an_edited_config(installed):
    """A second install must not overwrite the administrator's config."""
    root, prefix = installed
    cfg = next(p for p in (root + "/etc/vramd/vramd.yaml", prefix + "/etc/vramd/vramd.yaml")
               if os.path.exists(p))
    with open(cfg, "a") as f:
        f.write("# edited\n")
    r = run(["meson", "install", "-C", BUILD, "--no-rebuild", "--destdir", root], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert open(cfg).read().endswith("# edited\n")


def test_vramd_without_config_says_where_it_looked(installed):
    _, prefix = installed
    compiled = meson_prefix()
    looked = [os.path.join(compiled if compiled != "/usr" else "/", "etc/vramd/vramd.yaml"),
              "/etc/vramd/vramd.yaml"]
    if any(os.path.exists(p) for p in looked):
        pytest.skip("a config exists at " + " or ".join(looked) + ": vramd would read it")
    r = run([prefix + "/bin/vramd"])
    assert r.returncode == 2
    assert "/etc/vramd/vramd.yaml" in r.stderr and "--config" in r.stderr, r.stderr


def test_installed_demo_example_runs_with_commands_on_path(installed):
    """The installed demo config starts its servers by name from PATH, with the hook."""
    _, prefix = installed
    work = tempfile.mkdtemp(prefix="vramd-inst-run-")
    state = os.path.join(work, "state")
    env = dict(os.environ, PATH=prefix + "/bin:" + os.environ.get("PATH", "/usr/bin:/bin"))
    proc, url = start_vramd(prefix + "/bin/vramd",
                            ["--config", prefix + "/share/vramd/examples/demo.yaml", "--gpus", "2x24GiB"],
                            env, state)
    try:
        r = requests.post(url + "/api/workloads/chat/start", timeout=30)
        assert r.status_code == 200, r.text
        assert requests.get(url + "/api/workloads/chat", timeout=5).json()["state"] == "ready"
    finally:
        stop_vramd(proc)
    log = open(os.path.join(work, "vramd.log")).read()
    assert f"hook library: {os.path.realpath(prefix)}/lib/vramd/libvram.so" in log, log[-2000:]
    shutil.rmtree(work, ignore_errors=True)


def test_deb_installs_runs_from_default_config_and_removes_cleanly():
    if shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg and dpkg-deb are needed to build and install the package")
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root (CI runs this as root)")
    if run(["dpkg-query", "-W", "-f", "${Status}", "vramd"]).stdout.startswith("install"):
        pytest.skip("a vramd package is installed here already; not replacing it")
    if os.path.exists("/etc/vramd/vramd.yaml"):
        pytest.skip("/etc/vramd/vramd.yaml exists and is not this package's")
    work = tempfile.mkdtemp(prefix="vramd-deb-")
    try:
        r = run([os.path.join(SOURCE, "packaging", "mkdeb.sh"), os.path.join(work, "build"), work],
                timeout=110)
        assert r.returncode == 0, r.stdout + r.stderr
        deb = r.stdout.strip().splitlines()[-1]
        depends = run(["dpkg-deb", "-f", deb, "Depends"]).stdout
        for pkg in ("libevent-2.1-7", "libjansson4", "libfyaml0"):
            assert pkg in depends, depends
        r = run(["dpkg", "-i", deb])
        assert r.returncode == 0, r.stdout + r.stderr
        try:
            env = dict(os.environ, PATH="/usr/bin:/bin:" + os.environ.get("PATH", ""))
            assert shutil.which("vramd", path=env["PATH"]) == "/usr/bin/vramd"
            r = run(["vramd", "--version"], env=env)
            assert r.returncode == 0 and r.stdout.startswith("vramd "), r.stderr
            r = run(["vramctl", "--help"], env=env)
            assert r.returncode == 0 and "Usage" in r.stdout + r.stderr
            # no --config: the package's /etc/vramd/vramd.yaml, simulated GPUs
            state = os.path.join(work, "state")
            proc, url = start_vramd("/usr/bin/vramd", ["--gpus", "2x24GiB"], env, state)
            try:
                names = [w["name"] for w in requests.get(url + "/api/status", timeout=5).json()["workloads"]]
                assert "demo" in names
                r = requests.post(url + "/api/workloads/demo/start", timeout=30)
                assert r.status_code == 200, r.text
            finally:
                stop_vramd(proc)
        finally:
            r = run(["dpkg", "-r", "vramd"])
        assert r.returncode == 0, r.stdout + r.stderr
        for path in ("/usr/bin/vramd", "/usr/bin/vramctl", "/usr/bin/vram-demo-server",
                     "/usr/lib/vramd", "/usr/share/vramd", "/usr/lib/systemd/system/vramd.service"):
            assert not os.path.exists(path), path + " left after dpkg -r"
        # what Debian keeps after a remove: the conffile, until a purge
        status = run(["dpkg-query", "-W", "-f", "${Status}", "vramd"]).stdout
        assert status == "deinstall ok config-files", status
        assert os.path.exists("/etc/vramd/vramd.yaml")
    finally:
        run(["dpkg", "--purge", "vramd"])
        shutil.rmtree(work, ignore_errors=True)
    assert not os.path.exists("/etc/vramd"), "/etc/vramd left after dpkg --purge"
