# SPDX-License-Identifier: MIT
"""Starts the real vramd on loopback with the simulated GPU backend.

The `daemon` fixture is a factory: daemon(config_text=None, gpus="2x80GiB")
writes the config into a fresh directory, starts vramd on a free port with its
own state directory and control socket, waits until /healthz answers, and
stops it (SIGTERM) at the end of the test, failing the test if it does not
exit cleanly or leaves a workload process behind.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

BUILD = os.environ.get("VRAM_BUILD_ROOT") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build")
SOURCE = os.environ.get("VRAM_SOURCE_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..")
VRAMD = os.path.join(BUILD, "src", "daemon", "bin", "vramd")
VRAMCTL = os.path.join(BUILD, "src", "ctl", "bin", "vramctl")
DEMO = os.path.join(BUILD, "src", "demo", "vram-demo-server")

# Two demo model servers: "chat" (20GiB, GPU 0 or 1) and "embed" (4GiB),
# both lazy, with timers off so that nothing changes unless a test asks.
DEFAULT_CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:
  chat:
    cmd: [{demo}, --port, "${PORT}", --model, chat, --memory, 20GiB, --load-time, 200ms]
    gpus: 1
    memory: 20GiB
    health: /health
    restart: { policy: on-failure, backoff_max: 2s }
  embed:
    cmd: [{demo}, --port, "${PORT}", --model, embed, --memory, 4GiB, --load-time, 100ms]
    gpus: 1
    memory: 4GiB
    health: /health
"""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True while pid runs (a zombie does not count: it holds nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class UnixResponse:
    """The parts of a requests.Response that the tests read, for HTTP over a Unix socket."""

    def __init__(self, status, headers, body):
        self.status_code = status
        self.headers = headers
        self.content = body
        self.text = body.decode(errors="replace")

    def json(self):
        return json.loads(self.text)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def unix_request(path, method, url, json_body=None, headers=None, timeout=30):
    """One HTTP request over the Unix socket at path (as vramctl sends them)."""
    conn = _UnixConnection(path, timeout)
    body = None
    hdrs = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, url, body=body, headers=hdrs)
        r = conn.getresponse()
        return UnixResponse(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


class Daemon:
    def __init__(self, workdir, config_path, port, sock, extra_args):
        self.workdir = workdir
        self.config_path = config_path
        self.port = port
        self.sock = sock
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(workdir, "vramd.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [VRAMD, "--config", config_path, "--listen", f"127.0.0.1:{port}",
             "--state-dir", os.path.join(workdir, "state")] + extra_args,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.seen_pids = set()
        self.http = requests.Session()

    def wait_ready(self, timeout=10.0):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"vramd exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                return self.http.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(up, timeout, what="vramd /healthz")

    def log_text(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    # HTTP helpers: return the requests.Response.
    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.get(self.url + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.post(self.url + path, **kw)

    def put(self, path, **kw):
        kw.setdefault("timeout", 30)
        return self.http.put(self.url + path, **kw)

    def sock_request(self, method, path, json=None, headers=None, sock=None, timeout=30):
        """An HTTP request over the control socket (or sock): the owner's way in."""
        return unix_request(sock or self.sock, method, path, json_body=json, headers=headers,
                            timeout=timeout)

    def status(self):
        r = self.get("/api/status")
        assert r.status_code == 200, r.text
        st = r.json()
        for w in st["workloads"]:
            for p in pids_of(w):
                self.seen_pids.add(p)
        return st

    def workload(self, name):
        r = self.get(f"/api/workloads/{name}")
        assert r.status_code == 200, r.text
        w = r.json()
        for p in pids_of(w):
            self.seen_pids.add(p)
        return w

    def state(self, name):
        return self.workload(name)["state"]

    def wait_state(self, name, state, timeout=15.0):
        return wait_for(lambda: self.workload(name) if self.state(name) == state else None,
                        timeout, what=f"{name} to be {state}")

    def ctl(self, *args, url=None, check=None, timeout=60):
        """Runs the real vramctl against this daemon (its socket by default)."""
        cmd = [VRAMCTL, "--url", url or self.sock] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert r.returncode == check, f"{cmd} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status. Fails if it takes longer than timeout."""
        if self.proc.poll() is None:
            try:
                self.status()  # note the pids of whatever runs now
            except Exception:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"vramd did not exit within {timeout}s of SIGTERM:\n"
                                     f"{self.log_text()}")
        self.http.close()
        self.log.close()
        return self.proc.returncode


def pids_of(w):
    out = []
    if isinstance(w.get("pid"), int) and w["pid"] > 0:
        out.append(w["pid"])
    for p in w.get("pids") or []:
        if isinstance(p, int) and p > 0:
            out.append(p)
    for inst in w.get("instances") or []:
        if isinstance(inst, dict) and isinstance(inst.get("pid"), int) and inst["pid"] > 0:
            out.append(inst["pid"])
    return out


def stable_view(status):
    """What must not change after a refused call: states, pids, GPUs, memory, timeouts."""
    view = {}
    for w in status["workloads"]:
        view[w["name"]] = {k: v for k, v in w.items()
                           if k not in ("idle_seconds", "idle", "uptime_seconds", "since",
                                        "state_seconds", "last_used")}
    gpus = [{k: v for k, v in g.items() if k not in ("util_percent",)} for g in status["gpus"]]
    return json.dumps({"w": view, "g": gpus}, sort_keys=True)


@pytest.fixture
def daemon(request):
    for exe in (VRAMD, VRAMCTL, DEMO):
        if not os.path.exists(exe):
            pytest.fail(f"{exe} is not built")
    started = []

    def start(config_text=None, gpus="2x80GiB", extra_args=(), wait=True):
        # Short directory names: a Unix socket path holds at most 107 bytes.
        workdir = tempfile.mkdtemp(prefix="vramd-it-")
        text = (config_text if config_text is not None else DEFAULT_CONFIG).replace(
            "{demo}", DEMO).replace("{workdir}", workdir)
        config_path = os.path.join(workdir, "vramd.yaml")
        with open(config_path, "w") as f:
            f.write(text)
        sock = os.path.join(workdir, "state", "vramd.sock")
        args = list(extra_args)
        if gpus:
            args += ["--gpus", gpus]
        d = Daemon(workdir, config_path, free_port(), sock, args)
        started.append(d)
        if wait:
            d.wait_ready()
        return d

    yield start

    failures = []
    for d in started:
        if d.proc.poll() is None:
            rc = d.stop()
            if rc != 0:
                failures.append(f"vramd exited with {rc} after SIGTERM:\n{d.log_text()}")
        left = [p for p in d.seen_pids if pid_alive(p)]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            failures.append(f"workload processes left behind: {left}")
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(f"--- vramd log ({d.log_path}) ---\n{d.log_text()[-6000:]}")
    if failures:
        pytest.fail("\n".join(failures))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
