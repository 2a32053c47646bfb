# SPDX-License-Identifier: MIT
"""Runs the real vramd on a GPU machine and checks, through vramctl and the
REST API, what issue 4 asks of the daemon (see run-daemon-gpu.sh):
  ckpt   offload: checkpoint frees the GPU, restore brings the data back intact;
  move   (2+ GPUs of one model) the GPU is filled by another process while
         offloaded: the restore lands on another GPU, data intact, status shows it;
  mps    two share: mps replicas on GPU 0, each capped: an allocation over the
         cap fails in one and the other goes on; the MPS daemon quits with them.
Prints one line per check and a summary table; exits 1 if a check failed."""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(ROOT, "build"))
ap.add_argument("--gib", type=float, default=8)
ap.add_argument("--mps-gib", type=float, default=1)
ap.add_argument("--mps-cap-gib", type=int, default=4)
args = ap.parse_args()

VRAMD = os.path.join(args.build, "src", "daemon", "bin", "vramd")
VRAMCTL = os.path.join(args.build, "src", "ctl", "bin", "vramctl")
rows = []  # (case, check, ok, detail)


def note(case, check, ok, detail=""):
    rows.append((case, check, bool(ok), str(detail)))
    print(f"{'PASS' if ok else 'FAIL'} {case:5} {check:32} {detail}", flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(pred, timeout, step=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return None


workdir = tempfile.mkdtemp(prefix="vgd-", dir="/tmp")  # short: MPS socket paths
port = free_port()
url = f"http://127.0.0.1:{port}"
py = sys.executable
cfg = f"""
gpus:
  reserve: 1GiB
defaults:
  idle: {{ offload_after: never, release_after: never }}
  health: {{ path: /health, interval: 250ms, start_timeout: 180s }}
  restart: {{ policy: never }}
  stop_grace: 10s
workloads:
  torch:
    cmd: [{py}, {HERE}/gpu_holder.py, --port, "${{PORT}}", --gib, "{args.gib}"]
    gpus: 1
    memory: {int(args.gib) + 3}GiB
    offload: checkpoint
  rerank:
    cmd: [{py}, {HERE}/gpu_holder.py, --port, "${{PORT}}", --gib, "{args.mps_gib}"]
    gpus: [0]
    replicas: 2
    memory: {args.mps_cap_gib}GiB
    share: mps
    compute: 50
"""
cfg_path = os.path.join(workdir, "vramd.yaml")
with open(cfg_path, "w") as f:
    f.write(cfg)
log = open(os.path.join(workdir, "vramd.log"), "wb")
vramd = subprocess.Popen([VRAMD, "--config", cfg_path, "--listen", f"127.0.0.1:{port}",
                          "--state-dir", os.path.join(workdir, "s")],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
filler = None


def ctl(*a, timeout=240):
    r = subprocess.run([VRAMCTL, "--url", url] + list(a), capture_output=True, text=True,
                       timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).strip()


def wl(name):
    return http("GET", f"{url}/api/workloads/{name}")[1]


def gpus():
    return http("GET", f"{url}/api/status")[1]["gpus"]


def used(index):
    return gpus()[index]["memory"]["used"]


def wport(name, replica=0):
    return wl(name)["instances"][replica]["port"]


def check(name, replica=0):
    return http("GET", f"http://127.0.0.1:{wport(name, replica)}/check", timeout=300)[1]


def where(name):
    return [(g["index"], g["uuid"]) for g in wl(name)["gpus"]]


try:
    def up():
        if vramd.poll() is not None:
            raise SystemExit(f"vramd exited with {vramd.returncode}: see {workdir}/vramd.log")
        try:
            return http("GET", url + "/healthz", timeout=2)[0] == 200
        except OSError:
            return False
    if not wait_for(up, 20):
        raise SystemExit("vramd did not answer /healthz")
    GiB = 1 << 30
    g = gpus()
    print(f"GPUs: {[(x['index'], x['name']) for x in g]}", flush=True)

    # ---- ckpt: offload and restore in place
    t = time.monotonic()
    rc, out = ctl("start", "torch")
    note("ckpt", "vramctl start torch", rc == 0, f"{time.monotonic() - t:.1f}s {out[:80]}")
    home = where("torch")
    c = check("torch")
    note("ckpt", "data on GPU", c.get("ok"), f"{c.get('chunks')} chunks on GPU {home}")
    w = wl("torch")
    note("ckpt", "engine is checkpoint", w["engine"]["name"] == "checkpoint", w["engine"]["why"])
    before = used(home[0][0])
    rc, out = ctl("offload", "torch")
    w = wl("torch")
    freed = before - used(home[0][0])
    note("ckpt", "vramctl offload torch", rc == 0 and w["state"] == "offloaded",
         f"{w['engine']['last_seconds']:.2f}s {out[:80]}")
    note("ckpt", "offload freed the GPU", freed >= 0.9 * args.gib * GiB,
         f"{freed / GiB:.1f} GiB freed on GPU {home[0][0]}")
    if w["engine"]["last_seconds"] > 0:
        note("ckpt", "offload rate", True, f"{args.gib * GiB / 1e9 / w['engine']['last_seconds']:.2f} GB/s")
    rc, out = ctl("restore", "torch")
    w = wl("torch")
    note("ckpt", "vramctl restore torch", rc == 0 and w["state"] == "ready",
         f"{w['engine']['last_seconds']:.2f}s {out[:80]}")
    c = check("torch")
    note("ckpt", "checksums after restore", c.get("ok"), json.dumps(c)[:120])

    # ---- move: GPU filled while offloaded, restore lands elsewhere
    same = [x for x in g if x["name"] == g[home[0][0]]["name"]]
    if len(same) >= 2:
        rc, out = ctl("offload", "torch")
        note("move", "offload", rc == 0, out[:80])
        gi, uuid = home[0]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=uuid)
        leave = max(1.0, args.gib / 2)
        filler = subprocess.Popen(
            [py, "-c", "import torch,sys,time\n"
             "free,_=torch.cuda.mem_get_info()\n"
             f"x=torch.empty(int(free-{leave}*2**30),dtype=torch.uint8,device='cuda')\n"
             "print('ready',flush=True)\ntime.sleep(600)"],
            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = filler.stdout.readline().strip()
        note("move", f"GPU {gi} filled by another process", line == "ready",
             f"{used(gi) / GiB:.1f} GiB used")
        t = time.monotonic()
        rc, out = ctl("restore", "torch")
        secs = time.monotonic() - t
        w = wl("torch")
        now = where("torch")
        note("move", "vramctl restore torch", rc == 0 and w["state"] == "ready", f"{secs:.2f}s {out[:80]}")
        note("move", "status shows the new GPU", now and now[0][0] != gi,
             f"was GPU {gi} {uuid[:16]}, now {now}")
        c = check("torch")
        note("move", "checksums and compute after move", c.get("ok"), json.dumps(c)[:120])
        os.killpg(filler.pid, signal.SIGKILL)
        filler.wait()
        filler = None
    else:
        note("move", "skipped: needs 2 GPUs of one model", True, "")
    ctl("stop", "torch")

    # ---- mps: two capped replicas on GPU 0
    if shutil.which("nvidia-cuda-mps-control"):
        t = time.monotonic()
        rc, out = ctl("start", "rerank")
        note("mps", "vramctl start rerank", rc == 0, f"{time.monotonic() - t:.1f}s {out[:80]}")
        st = http("GET", f"{url}/api/status")[1]
        ds = st["mps"]["daemons"]
        note("mps", "one MPS daemon for both", len(ds) == 1 and ds[0]["state"] == "running",
             json.dumps([(d["gpus"], d["state"], d["control_pid"]) for d in ds]))
        cl = wl("rerank")["mps"]["clients"]
        note("mps", "clients capped", len(cl) == 2 and all(c["mem_limit"] for c in cl),
             json.dumps([(c["replica"], c["pid"], c["mem_limit"], c["server_pid"]) for c in cl]))
        rc, out = ctl("mps", "status")
        note("mps", "vramctl mps status", rc == 0 and "running" in out, out.replace("\n", " | ")[:100])
        over = http("GET", f"http://127.0.0.1:{wport('rerank', 0)}/alloc?gib={args.mps_cap_gib + 1}")[1]
        note("mps", "over the cap fails in replica 0", over and not over.get("ok"), json.dumps(over)[:100])
        c1 = check("rerank", 1)
        small = http("GET", f"http://127.0.0.1:{wport('rerank', 1)}/alloc?gib=0.5")[1]
        note("mps", "replica 1 unaffected", c1.get("ok") and small.get("ok"), json.dumps(c1)[:100])
        c0 = check("rerank", 0)
        note("mps", "replica 0 goes on", c0.get("ok"), json.dumps(c0)[:100])
        rc, out = ctl("stop", "rerank")
        gone = wait_for(lambda: http("GET", f"{url}/api/mps")[1]["daemons"] == [], 20)
        note("mps", "MPS daemon quits with the workload", rc == 0 and gone, out[:80])
    else:
        note("mps", "skipped: nvidia-cuda-mps-control not in PATH", True, "")
finally:
    if filler:
        os.killpg(filler.pid, signal.SIGKILL)
    if vramd.poll() is None:
        vramd.send_signal(signal.SIGTERM)
        try:
            vramd.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(vramd.pid, signal.SIGKILL)
    log.close()

print()
print(f"{'case':5}  {'check':34} {'result':6}  detail")
for case, chk, ok, detail in rows:
    print(f"{case:5}  {chk:34} {'PASS' if ok else 'FAIL':6}  {detail[:90]}")
print(f"vramd log: {workdir}/vramd.log")
sys.exit(0 if all(r[2] for r in rows) else 1)
