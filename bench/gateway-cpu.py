#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where the CPU goes when wrk loads the backend directly, through the
gateway, and through the zero-work relays: requests/s, the share of the
cores that were busy, and per process the CPU time and context switches per
request, all read from /proc over the middle of each wrk run.

  bench/gateway-cpu.py [BUILD_DIR] [DURATION_S] [CONNECTIONS]
  ROUNDS=N   measure every path N times, interleaved
  SCHED=batch  also measure the gateway and the epoll relay with the proxy
               under SCHED_BATCH (no wake-up preemption)

Run it under taskset to restrict everything to a set of cores
(taskset -c 0,1 python3 bench/gateway-cpu.py build 4 32)."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
CONNS = int(sys.argv[3]) if len(sys.argv) > 3 else 32
ROUNDS = int(os.environ.get("ROUNDS", "1"))
SCHED = os.environ.get("SCHED", "")
TICK = os.sysconf("SC_CLK_TCK")
CPUS = sorted(os.sched_getaffinity(0))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_sample(pid):
    """(cpu seconds, voluntary + involuntary context switches) of every
    thread of pid."""
    cpu = 0.0
    cs = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        cs += int(line.split()[1])
        except FileNotFoundError:
            pass
    return cpu, cs


def cpu_sample():
    """(busy, total) jiffies over the cores this runs on."""
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if not m or int(m.group(1)) not in CPUS:
                continue
            v = [int(x) for x in m.group(2).split()]
            idle = v[3] + v[4]
            total += sum(v[:8])
            busy += sum(v[:8]) - idle
    return busy, total


def pin(pid, cpus):
    if cpus:
        subprocess.run(["taskset", "-a", "-pc", cpus, str(pid)], check=True,
                       stdout=subprocess.DEVNULL)


def measure(url, procs):
    """wrk at url; procs: name -> pid (the wrk process is added)."""
    pw = os.environ.get("PIN_WRK")
    w = subprocess.Popen((["taskset", "-c", pw] if pw else []) + ["wrk", f"-t{os.environ.get('WRK_THREADS', '1')}", f"-c{CONNS}", f"-d{DURATION:g}s", url],
                         stdout=subprocess.PIPE, text=True)
    procs = dict(procs, wrk=w.pid)
    time.sleep(0.5)
    a = {n: proc_sample(p) for n, p in procs.items()}
    c0 = cpu_sample()
    t0 = time.monotonic()
    time.sleep(DURATION - 1.0)
    b = {n: proc_sample(p) for n, p in procs.items()}
    c1 = cpu_sample()
    t1 = time.monotonic()
    out = w.communicate()[0]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        sys.exit(f"wrk gave no rate for {url}:\n{out}")
    rps = float(m.group(1))
    if "Non-2xx" in out or "Socket errors" in out:
        print("wrk reported errors:\n" + out, file=sys.stderr)
    n = rps * (t1 - t0)
    per = {k: ((b[k][0] - a[k][0]) / n * 1e6, (b[k][1] - a[k][1]) / n) for k in procs}
    busy = (c1[0] - c0[0]) / max(1, c1[1] - c0[1])
    return rps, busy, per


def start_relay(mode, to_port):
    p = subprocess.Popen([f"{BUILD}/bench/bench-relay", "--mode", mode, "--listen", "0",
                          "--to", str(to_port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    line = p.stdout.readline()
    if not line.startswith("port "):
        print(f"no {mode} relay: {line.strip()}", file=sys.stderr)
        p.kill()
        return None, None
    return p, int(line.split()[1])


def chrt(pid, policy):
    subprocess.run(["chrt", "-a", policy, "-p", "0", str(pid)], check=True,
                   stdout=subprocess.DEVNULL)


def main():
    backend = os.path.abspath(f"{BUILD}/bench/bench-http-backend")
    d = tempfile.mkdtemp(prefix="vramd-gwcpu-")
    with open(f"{d}/bench.yaml", "w") as f:
        f.write(f"""daemon:
  log_level: warn
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 1s
workloads:
  bench:
    cmd: [{backend}, --port, "${{PORT}}"]
    gpus: 1
    memory: 1GiB
    health: {{ tcp: true }}
""")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(f"{d}/vramd.log", "w")
    vramd = subprocess.Popen([f"{BUILD}/src/daemon/bin/vramd", "--config", f"{d}/bench.yaml",
                              "--listen", f"127.0.0.1:{port}", "--gpus", "1x80GiB",
                              "--state-dir", f"{d}/state"], stderr=log)
    relays = []
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(f"{url}/w/bench/", timeout=30).read()
        info = json.load(urllib.request.urlopen(f"{url}/api/workloads/bench"))
        bport = info["port"]
        bpid = int(subprocess.check_output(["pgrep", "-f", f"^{backend} --port {bport}"],
                                           text=True).split()[0])
        paths = [("direct", f"http://127.0.0.1:{bport}/v1/bench", {}),
                 ("gateway", f"{url}/w/bench/v1/bench", {"proxy": vramd.pid})]
        for mode in ("epoll", "uring"):
            p, rport = start_relay(mode, bport)
            if p:
                relays.append(p)
                paths.append((f"relay-{mode}", f"http://127.0.0.1:{rport}/v1/bench",
                              {"proxy": p.pid}))
        if SCHED == "batch":
            ep = [p for n, _, p in paths if n == "relay-epoll"]
            paths.append(("gateway+batch", f"{url}/w/bench/v1/bench", {"proxy": vramd.pid}))
            if ep:
                paths.append(("relay-epoll+batch", [u for n, u, _ in paths if n == "relay-epoll"][0],
                              ep[0]))
        subprocess.run(["wrk", "-t1", f"-c{CONNS}", "-d1s", paths[1][1]], stdout=subprocess.DEVNULL)
        print(f"gateway-cpu: wrk -t1 -c{CONNS} -d{DURATION:g}s, cores {CPUS}, {ROUNDS} round(s)")
        print(f"gateway-cpu: {'path':<18} {'req/s':>9} {'of direct':>9} {'busy':>5}  "
              "per request: CPU us (context switches) of wrk / backend / proxy")
        for r in range(ROUNDS):
            direct = None
            for name, u, procs in paths:
                pol = "--batch" if name.endswith("+batch") else "--other"
                if procs:
                    chrt(procs["proxy"], pol)
                    pin(procs["proxy"], os.environ.get("PIN_PROXY"))
                pin(bpid, os.environ.get("PIN_BACKEND"))
                rps, busy, per = measure(u, dict(procs, backend=bpid))
                if direct is None:
                    direct = rps
                cols = " / ".join(f"{per[k][0]:.1f} ({per[k][1]:.2f})" if k in per else "-"
                                  for k in ("wrk", "backend", "proxy"))
                print(f"gateway-cpu: {name:<18} {rps:>9.0f} {100 * rps / direct:>8.0f}% "
                      f"{100 * busy:>4.0f}%  {cols}", flush=True)
    finally:
        for p in relays:
            p.kill()
        vramd.terminate()
        vramd.wait()


main()
