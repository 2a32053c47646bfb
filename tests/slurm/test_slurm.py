# SPDX-License-Identifier: MIT
"""vramd under Slurm, for real: two slurmd nodes (n1, n2) on loopback, a vramd
per node on one simulated 1 GiB GPU cut into 16 shards of 64 MiB, and
spank_vramd.so in plugstack.conf (tests/slurm/cluster.sh starts them all).

The jobs run fc-server (tests/fakecuda) on the fake driver: it allocates
64 MiB of "device" memory with a pattern and answers /health, /check (the
pattern is intact) and /alloc/N (N MiB more, freed at once; 507 past the
hook's cap). The hook charges its context 64 MiB, so a job uses 128 MiB.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

BUILD = os.environ.get("VRAM_BUILD_ROOT") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER = os.path.join(HERE, "cluster.sh")
VRAMCTL = os.path.join(BUILD, "src", "ctl", "bin", "vramctl")
MIB = 1 << 20
SHARD = 64 * MIB

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="slurmd, slurmctld and munged run as root")


def wait_for(pred, timeout=60.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path_ = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path_)


def get(url):
    """(status, text) of GET url on 127.0.0.1, or (0, error) when nothing answers."""
    host, _, path = url.partition("/")
    c = http.client.HTTPConnection(host, timeout=60)
    try:
        c.request("GET", "/" + path)
        r = c.getresponse()
        return r.status, r.read().decode()
    except OSError as e:
        return 0, str(e)
    finally:
        c.close()


class Cluster:
    def __init__(self, root):
        self.root = root
        self.env = dict(os.environ, SLURM_CONF=os.path.join(root, "slurm.conf"))
        self.jobs = []

    def sock(self, node):
        return os.path.join(self.root, f"vramd-{node}", "vramd.sock")

    def api(self, node, method, path, body=None):
        c = _Unix(self.sock(node))
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            c.close()

    def raw(self, node, path):
        """The text of GET path on the node's control socket."""
        c = _Unix(self.sock(node))
        try:
            c.request("GET", path)
            r = c.getresponse()
            assert r.status == 200, r.status
            return r.read().decode()
        finally:
            c.close()

    def status(self, node):
        st, body = self.api(node, "GET", "/api/status")
        assert st == 200, body
        return body

    def workloads(self, node):
        return {w["name"]: w for w in self.status(node)["workloads"]}

    def ctl(self, node, *args):
        return subprocess.run([VRAMCTL, "--url", self.sock(node)] + list(args),
                              capture_output=True, text=True, timeout=120)

    def slurm(self, *args, check=True):
        r = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=60)
        if check:
            assert r.returncode == 0, f"{args}: {r.stdout}{r.stderr}"
        return r

    @property
    def server(self):
        return os.path.join(self.root, "bin", "fc-server")

    def submit(self, shards, *opts):
        """Starts fc-server as a one-task job asking for shards; returns its record."""
        port = free_port()
        name = f"fc{port}"
        env = dict(self.env, PORT=str(port), LD_LIBRARY_PATH=os.path.join(self.root, "lib"),
                   VRAM_HOOK_CONTEXT_MEMORY="64MiB", VRAM_FAKE_CONTEXT_MEMORY="64MiB",
                   FC_SERVER_MIB="64")
        out = open(os.path.join(self.root, f"{name}.out"), "wb")
        gres = [f"--gres=shard:{shards}"] if shards else []
        p = subprocess.Popen(["srun", "-J", name, "-n1", "--mem=100"] + gres + list(opts) +
                             [self.server], env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        job = {"name": name, "port": port, "srun": p, "shards": shards, "out": out.name}
        self.jobs.append(job)
        wait_for(lambda: p.poll() is None and get(f"127.0.0.1:{port}/health")[0] == 200,
                 90, what=f"job {name} to serve ({self.output(job)})")
        r = self.slurm("squeue", "-h", "-n", name, "-o", "%i %N")
        jid, node = r.stdout.split()
        job.update(id=jid, node=node, workload=f"slurm-{jid}.0")
        return job

    def output(self, job):
        with open(job["out"], "rb") as f:
            return f.read().decode(errors="replace")

    def end(self, job):
        self.slurm("scancel", job["id"], check=False)
        try:
            job["srun"].wait(60)
        except subprocess.TimeoutExpired:
            job["srun"].kill()
            job["srun"].wait()

    def end_all(self):
        for j in self.jobs:
            if j["srun"].poll() is None:
                if "id" in j:
                    self.slurm("scancel", j["id"], check=False)
                try:
                    j["srun"].wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(j["srun"].pid, signal.SIGKILL)
                    j["srun"].wait()
        self.jobs = []


@pytest.fixture(scope="module")
def cluster():
    assert os.path.exists(os.path.join(BUILD, "src", "spank", "spank_vramd.so")), \
        "spank_vramd.so is not built: install libslurm-dev (make deps) and set up the build again"
    subprocess.run(["sh", CLUSTER, "deps"], check=True)
    root = tempfile.mkdtemp(prefix="vram-slurm-")
    try:
        r = subprocess.run(["sh", CLUSTER, "start", root, BUILD], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        c = Cluster(root)
        yield c
        c.end_all()
    finally:
        subprocess.run(["sh", CLUSTER, "stop", root], timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def c(cluster):
    yield cluster
    cluster.end_all()


def test_shards_place_cap_list_and_end(c):
    # 2 CPUs and 16 shards a node: Slurm can only put a 4 and a 12 on each
    jobs = [c.submit(s) for s in (4, 12, 4, 12)]
    assert {j["node"] for j in jobs} == {"n1", "n2"}, [(j["id"], j["node"]) for j in jobs]
    for node in ("n1", "n2"):
        mine = [j for j in jobs if j["node"] == node]
        ws = wait_for(lambda: (lambda ws: ws if all(
            j["workload"] in ws and (ws[j["workload"]].get("hook") or {}).get("processes") and
            ws[j["workload"]]["hook"]["processes"][0]["used_bytes"] == 128 * MIB
            for j in mine) else None)(c.workloads(node)),
            what=f"{node}'s jobs to be attached and hooked")
        for j in mine:
            w = ws[j["workload"]]
            cap = j["shards"] * SHARD
            assert w["state"] == "ready", w
            assert w["memory"]["per_gpu_bytes"] == cap, w["memory"]   # the ledger: its shards
            p = w["hook"]["processes"][0]
            assert p["cap_bytes"] == cap and p["connected"] and not p["external"], p
        # charged on the node's GPU: what Slurm gave, not what the jobs use
        gpu = c.status(node)["gpus"][0]["memory"]
        assert gpu["used"] == sum(j["shards"] for j in mine) * SHARD, gpu
        metrics = c.raw(node, "/metrics")
        for j in mine:
            assert f'workload="{j["workload"]}"' in metrics, metrics[:2000]
        table = c.ctl(node, "status")
        assert table.returncode == 0 and all(j["workload"] in table.stdout for j in mine), table.stdout
        # past its shards the small job's allocation fails inside it; its neighbour is untouched
        small = next(j for j in mine if j["shards"] == 4)
        big = next(j for j in mine if j["shards"] == 12)
        assert get(f"127.0.0.1:{small['port']}/alloc/64") == (200, f"ok {64 * MIB}")
        st, text = get(f"127.0.0.1:{small['port']}/alloc/160")
        assert st == 507 and "cuMemAlloc" in text, (st, text)
        assert get(f"127.0.0.1:{big['port']}/alloc/160") == (200, f"ok {160 * MIB}")
        assert get(f"127.0.0.1:{big['port']}/check") == (200, f"ok {64 * MIB}")
        assert get(f"127.0.0.1:{small['port']}/check") == (200, f"ok {64 * MIB}")
    # a job's end removes its workload (the step's end, through the plugin)
    for j in jobs:
        c.end(j)
    for node in ("n1", "n2"):
        wait_for(lambda: not any(n.startswith("slurm-") for n in c.workloads(node)),
                 what=f"{node}'s workloads to go with their jobs")
        assert c.status(node)["gpus"][0]["memory"]["used"] == 0


def job_pid(server, port):
    """The pid of the job's fc-server: the process whose environment has PORT=port."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{d}/exe") != os.path.realpath(server):
                continue
            env = open(f"/proc/{d}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"PORT={port}".encode() in env:
            return int(d), env
    raise AssertionError(f"no fc-server with PORT={port}")


def test_no_shards_no_cap(c):
    j = c.submit(0)
    # a job that asks for nothing is left alone: not preloaded, not attached, no cap
    assert get(f"127.0.0.1:{j['port']}/alloc/512") == (200, f"ok {512 * MIB}")
    assert not any(n.startswith("slurm-") for n in c.workloads(j["node"]))
    _, env = job_pid(c.server, j["port"])
    assert not any(e.startswith(b"LD_PRELOAD=") and b"libvram.so" in e for e in env)


def test_vram_memory_option_and_idle_offload_restore(c):
    j = c.submit(0, "--vram-memory=300MiB", "--vram-offload-after=2s")
    node, name = j["node"], j["workload"]
    w = wait_for(lambda: c.workloads(node).get(name), what="the step to be attached")
    assert w["memory"]["per_gpu_bytes"] == 300 * MIB
    # idle: offloaded by its timer, the memory moved to host RAM by the hook
    w = wait_for(lambda: (lambda w: w if w and w["state"] == "offloaded" else None)(
        c.workloads(node).get(name)), what="the idle timer to offload the step")
    assert w["memory"]["offloaded_bytes"] == 64 * MIB, w["memory"]
    p = w["hook"]["processes"][0]
    assert p["state"] == "offloaded" and p["resident_bytes"] == 64 * MIB, p  # the context stays
    # on demand: restored, contents intact
    r = c.ctl(node, "restore", name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert c.workloads(node)[name]["state"] == "ready"
    assert get(f"127.0.0.1:{j['port']}/check") == (200, f"ok {64 * MIB}")


def test_vramd_killed_jobs_run_on_and_are_taken_back(c):
    j = c.submit(4)
    node, name = j["node"], j["workload"]
    wait_for(lambda: (lambda w: w and w.get("hook") and w["hook"]["processes"])(c.workloads(node).get(name)),
             what="the step to be hooked")
    pidfile = os.path.join(c.root, f"vramd-{node}.pid")
    vramd = int(open(pidfile).read())
    os.kill(vramd, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{vramd}/cmdline") or
             open(f"/proc/{vramd}/stat").read().split(")")[1].split()[0] == "Z",
             what="vramd to die")
    # the job runs on, its cap still enforced by the hook inside it
    assert get(f"127.0.0.1:{j['port']}/check") == (200, f"ok {64 * MIB}")
    assert get(f"127.0.0.1:{j['port']}/alloc/160")[0] == 507
    assert c.slurm("squeue", "-h", "-j", j["id"], "-o", "%T").stdout.strip() == "RUNNING"
    # a vramd started on the same state directory takes the step back, and its hook reconnects
    subprocess.run(["sh", CLUSTER, "vramd", c.root, BUILD, node], check=True, timeout=60)
    w = wait_for(lambda: (lambda w: w if w and w.get("hook") and w["hook"]["processes"] and
                          w["hook"]["processes"][0]["connected"] else None)(
        c.workloads(node).get(name)), what="the new vramd to take the step back")
    assert w["state"] == "ready" and w["memory"]["per_gpu_bytes"] == 4 * SHARD
    c.end(j)
    wait_for(lambda: name not in c.workloads(node), what="the step's end to remove it")


def test_suspend_offloads_before_stop_and_restores_on_resume(c):
    # task/vramd: slurmd offloads the job's steps before slurmstepd stops them
    # (SIGTSTP, SIGSTOP), and restores them after SIGCONT (docs/scale-out.md)
    j = c.submit(4)
    node, name = j["node"], j["workload"]
    wait_for(lambda: (lambda w: w and w.get("hook") and w["hook"]["processes"])(
        c.workloads(node).get(name)), what="the step to be hooked")
    pid = c.workloads(node)[name]["pid"]
    c.slurm("scontrol", "suspend", j["id"])
    wait_for(lambda: open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "T",
             what="the task to be stopped")
    # stopped only after the offload: its memory was in host RAM before SIGSTOP
    w = c.workloads(node)[name]
    assert w["state"] == "offloaded", w["state"]
    assert w["memory"]["offloaded_bytes"] == 64 * MIB, w["memory"]
    assert w["hook"]["processes"][0]["state"] == "offloaded"
    # in slurmd's log (slurmstepd writes there too): the offload ended before the step's
    # slurmstepd began to suspend it
    log = open(os.path.join(c.root, f"slurmd-{node}.log")).read()
    done = log.find(f"task/vramd: {name}: offload done")
    suspend = log.find(f"_handle_suspend for StepId={j['id']}.0")
    assert 0 <= done < suspend, log[-3000:]
    assert c.slurm("squeue", "-h", "-j", j["id"], "-o", "%T").stdout.strip() == "SUSPENDED"
    c.slurm("scontrol", "resume", j["id"])
    w = wait_for(lambda: (lambda w: w if w["state"] == "ready" else None)(
        c.workloads(node)[name]), what="the step to be restored on resume")
    assert w["hook"]["processes"][0]["state"] == "running"
    assert get(f"127.0.0.1:{j['port']}/check") == (200, f"ok {64 * MIB}")


def test_job_of_another_user(c):
    # a step of a user other than root: owned by that user, its hook on the shared socket
    j = c.submit(4, "--uid=nobody")
    node, name = j["node"], j["workload"]
    w = wait_for(lambda: (lambda w: w if w and w.get("hook") and w["hook"]["processes"] and
                          w["hook"]["processes"][0]["connected"] else None)(
        c.workloads(node).get(name)), what="the other user's step to be hooked")
    assert w["owner"]["user"] == "nobody", w["owner"]
    assert w["hook"]["processes"][0]["cap_bytes"] == 4 * SHARD
    assert get(f"127.0.0.1:{j['port']}/alloc/160")[0] == 507
    for action in ("offload", "restore"):
        r = c.ctl(node, action, name)
        assert r.returncode == 0, r.stdout + r.stderr
    assert get(f"127.0.0.1:{j['port']}/check") == (200, f"ok {64 * MIB}")
