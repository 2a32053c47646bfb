# SPDX-License-Identifier: MIT
"""The hook engine through the real vramd, on the fake CUDA driver.

fc-server (tests/fakecuda) fills 64 MiB of "device" memory with a pattern and
answers /health and /check; vramd preloads libvram.so into it (offload: hook)
and moves that memory out and back over the hook channel. The same program,
started by hand with LD_PRELOAD and VRAM_CONTROL, is offloaded with
`vramctl offload --pid`. Two of them in one workload (two ranks) move as a
group: every gate closes before any copies, every rank is restored before
any gate opens.
"""
import os
import socket
import struct
import subprocess
import tempfile
import time

import requests

from conftest import BUILD, VRAMCTL, free_port, pid_alive, wait_for

FAKECUDA = os.path.join(BUILD, "tests", "fakecuda")
SERVER = os.path.join(FAKECUDA, "fc-server")
LIBVRAM = os.path.join(BUILD, "src", "hook", "libvram.so")
MIB = 1 << 20

# In the sanitizer build fc-server and libvram.so are instrumented: the
# runtime is preloaded first (vramd keeps it there) and leaks are not checked
# in a server that is killed rather than exiting.
ASAN_OPTIONS = "detect_leaks=0"


def sanitizer_runtime():
    out = subprocess.run(["ldd", SERVER], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "libasan" in line and "=>" in line:
            return line.split("=>")[1].split()[0]
    return ""


ASAN_RT = sanitizer_runtime()

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
    cmd: [@server@]
    gpus: 1
    memory: 1GiB
    health: /health
    offload: hook
    env:
      LD_LIBRARY_PATH: @fakecuda@
      VRAM_HOOK_CONTEXT_MEMORY: 64MiB
      VRAM_FAKE_CONTEXT_MEMORY: 64MiB
      VRAM_HOOK_LOG: "{workdir}/hook.log"
      FC_SERVER_MIB: "64"
      ASAN_OPTIONS: "@asan@"
      LD_PRELOAD: "@asan_rt@"
""".replace("@server@", SERVER).replace("@fakecuda@", FAKECUDA).replace("@asan@", ASAN_OPTIONS).replace(
    "@asan_rt@", ASAN_RT)


def check(port):
    return requests.get(f"http://127.0.0.1:{port}/check", timeout=30)


def test_hook_engine_offload_restore(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "fcs", check=0)
    w = d.workload("fcs")
    assert w["engine"]["name"] == "hook", w["engine"]
    pid = w["pid"]
    # Registration comes with the hello; the numbers with the usage reports, which the hook
    # sends at most once a second: the first may come after the context and before the
    # server's own 64 MiB, so wait for the report that has both.
    hook = wait_for(lambda: (lambda h: h if h and h["processes"] and
                             h["measured_bytes"] == 128 * MIB else None)(
        d.workload("fcs")["hook"]), what="the hook to register and report its usage")
    procs = hook["processes"]
    assert [p["pid"] for p in procs] == [pid]
    assert procs[0]["connected"] and procs[0]["state"] == "running"
    assert procs[0]["cap_bytes"] == 1 << 30            # VRAM_MEMORY_LIMIT from memory: 1GiB
    assert procs[0]["used_bytes"] == 128 * MIB           # 64 MiB data + 64 MiB context
    assert hook["measured_bytes"] == 128 * MIB
    env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert any(e.startswith(b"LD_PRELOAD=") and b"libvram.so" in e for e in env)

    r = d.ctl("offload", "fcs", check=0)
    assert "64MiB" in r.stdout and "via hook" in r.stdout, r.stdout
    w = d.workload("fcs")
    assert w["state"] == "offloaded"
    assert w["memory"]["offloaded_bytes"] == 64 * MIB            # what the hook moved, not the declared 1GiB
    assert w["pid"] == pid                               # the process lives on
    # at once, not after the hook's next usage report: the result carried the bytes it moved
    procs = d.workload("fcs")["hook"]["processes"]
    p = [x for x in procs if x["resident_bytes"] == 64 * MIB]
    assert len(p) == 1, procs
    assert p[0]["state"] == "offloaded"

    r = d.ctl("restore", "fcs", check=0)
    assert d.state("fcs") == "ready"
    c = check(w["port"])
    assert c.status_code == 200 and c.text == f"ok {64 * MIB}", c.text

    # offload twice in a row, then restore: still the same bytes
    d.ctl("offload", "fcs", check=0)
    d.ctl("offload", "fcs", check=0)
    d.ctl("restore", "fcs", check=0)
    assert check(w["port"]).text == f"ok {64 * MIB}"


def test_hook_engine_process_without_hook_fails_clearly(daemon):
    # the hook channel knows nothing of a workload whose process never loads the driver
    cfg = CONFIG.replace("cmd: [{}]".format(SERVER),
                         "cmd: [{demo}, --port, \"${PORT}\", --model, x, --memory, 1GiB]")
    d = daemon(cfg)
    d.ctl("start", "fcs", check=0)
    r = d.ctl("offload", "fcs")
    assert r.returncode == 1
    assert "no process of fcs is connected to the hook" in r.stderr, r.stderr
    assert d.state("fcs") == "ready"


def test_vramctl_offload_by_pid():
    workdir = tempfile.mkdtemp(prefix="vramd-pid-")
    port = free_port()
    env = dict(os.environ, PORT=str(port), LD_PRELOAD=(ASAN_RT + " " + LIBVRAM).strip(), LD_LIBRARY_PATH=FAKECUDA,
               VRAM_CONTROL=os.path.join(workdir, "ctl-%p.sock"), VRAM_HOOK_CONTEXT_MEMORY="64MiB",
               VRAM_FAKE_CONTEXT_MEMORY="64MiB", FC_SERVER_MIB="32", ASAN_OPTIONS=ASAN_OPTIONS)
    proc = subprocess.Popen([SERVER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = os.path.join(workdir, f"ctl-{proc.pid}.sock")
        wait_for(lambda: os.path.exists(sock), what="the control socket")

        def listening():
            try:
                return check(port).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(listening, what="fc-server to listen")

        def ctl(*args):
            return subprocess.run([VRAMCTL] + list(args), capture_output=True, text=True, timeout=60)

        r = ctl("offload", "--pid", str(proc.pid))
        assert r.returncode == 0, r.stderr
        assert f"offloaded {32 * MIB} bytes" in r.stdout, r.stdout
        r = ctl("status", "--pid", str(proc.pid))
        assert r.returncode == 0 and "state=offloaded" in r.stdout, r.stdout
        r = ctl("restore", "--pid", str(proc.pid))
        assert r.returncode == 0, r.stderr
        c = check(port)
        assert c.status_code == 200 and c.text == f"ok {32 * MIB}", c.text
        # restoring what is not offloaded fails, with the hook's words
        r = ctl("restore", "--pid", str(proc.pid))
        assert r.returncode == 1 and "not offloaded" in r.stderr, r.stderr
        # a process without the hook
        r = ctl("offload", "--pid", str(os.getpid()))
        assert r.returncode == 1 and "VRAM_CONTROL" in r.stderr, r.stderr
        r = ctl("offload", "mywl", "--pid", str(proc.pid))
        assert r.returncode == 2
    finally:
        proc.kill()
        proc.wait()
        assert not pid_alive(proc.pid)


def test_hook_unparsable_limit_warns(daemon):
    # vramd sets VRAM_MEMORY_LIMIT; the workload's launcher replaces it with one that does not parse
    cfg = CONFIG.replace("cmd: [{}]".format(SERVER),
                         'cmd: [/bin/sh, -c, "VRAM_MEMORY_LIMIT=lots exec {}"]'.format(SERVER))
    d = daemon(cfg)
    d.ctl("start", "fcs", check=0)
    w = d.workload("fcs")
    pid = w["pid"]
    hook = wait_for(lambda: d.workload("fcs")["hook"], what="the hook to register")
    assert hook["warning"] == (f'pid {pid}: VRAM_MEMORY_LIMIT "lots" is not a size or fraction: '
                               "running without a cap"), hook
    procs = hook["processes"]
    assert procs[0]["pid"] == pid and procs[0]["limit_invalid"] is True
    assert procs[0]["cap_bytes"] is None
    # the workload runs, uncapped, and still offloads
    assert check(w["port"]).text == f"ok {64 * MIB}"
    r = d.ctl("offload", "fcs", check=0)
    assert "64MiB" in r.stdout, r.stdout
    d.ctl("restore", "fcs", check=0)
    assert check(w["port"]).text == f"ok {64 * MIB}"
    # one clear line in the hook log, none on the program's output
    log = open(os.path.join(d.workdir, "hook.log")).read()
    assert log.count('Ignoring VRAM_MEMORY_LIMIT="lots"') == 1, log
    out = d.get("/api/workloads/fcs/logs")
    assert out.status_code == 200 and "VRAM_MEMORY_LIMIT" not in out.text, out.text
    st = d.status()
    assert [x for x in st["workloads"] if x["name"] == "fcs"][0]["hook"]["warning"] == hook["warning"]


# The hook channel's wire format (src/proto/hook_proto.h), enough to stand in for vramd.
PROTO_MAGIC = 0x4b485256
PROTO_VERSION = 4  # the hook's; it reads the commands below in version 2 as well
MSG_HELLO, MSG_USAGE, MSG_OFFLOAD, MSG_RESTORE, MSG_RESULT = 1, 2, 3, 4, 5


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        assert chunk, "the hook closed the connection"
        buf += chunk
    return buf


def recv_msg(conn):
    magic, version, mtype, length, _seq = struct.unpack("<IHHII", recv_exact(conn, 16))
    assert magic == PROTO_MAGIC and version == PROTO_VERSION, (magic, version)
    return mtype, recv_exact(conn, length)


def send_command(conn, mtype, request_id):
    conn.sendall(struct.pack("<IHHIIII", PROTO_MAGIC, 2, mtype, 8, request_id, request_id, 0))


def wait_result(conn, request_id):
    while True:
        mtype, payload = recv_msg(conn)
        if mtype == MSG_RESULT:
            rid, _op, status, _state, moved = struct.unpack_from("<IIiIQ", payload)
            assert rid == request_id
            return status, moved


def hook_listener(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(20)
    return srv


def accept_hello(srv, pid):
    conn, _ = srv.accept()
    conn.settimeout(20)
    mtype, payload = recv_msg(conn)
    assert mtype == MSG_HELLO
    hello_pid, ndev = struct.unpack_from("<II", payload)
    assert hello_pid == pid and ndev == 1
    # the first device's cap: after pid, ndev, workload name, index and uuid, physical
    cap, = struct.unpack_from("<Q", payload, 8 + 64 + 4 + 16 + 8)
    return conn, cap


def test_hook_survives_vramd_and_reconnects():
    """vramd gone: the program runs on with its cap; the hook reconnects to the same socket and offloads."""
    workdir = tempfile.mkdtemp(prefix="vramd-rc-")
    path = os.path.join(workdir, "hook.sock")
    port = free_port()
    srv = hook_listener(path)
    env = dict(os.environ, PORT=str(port), LD_PRELOAD=(ASAN_RT + " " + LIBVRAM).strip(), LD_LIBRARY_PATH=FAKECUDA,
               VRAM_HOOK_SOCKET=path, VRAM_WORKLOAD="fcs", VRAM_MEMORY_LIMIT="256MiB",
               VRAM_CONTROL=os.path.join(workdir, "ctl-%p.sock"), VRAM_HOOK_CONTEXT_MEMORY="64MiB",
               VRAM_FAKE_CONTEXT_MEMORY="64MiB", FC_SERVER_MIB="32", ASAN_OPTIONS=ASAN_OPTIONS)
    proc = subprocess.Popen([SERVER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn, cap = accept_hello(srv, proc.pid)
        assert cap == 256 * MIB

        # vramd goes away
        conn.close()
        srv.close()
        os.unlink(path)
        time.sleep(1.5)
        assert proc.poll() is None

        def listening():
            try:
                return check(port).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(listening, what="fc-server to listen")
        assert check(port).text == f"ok {32 * MIB}"
        r = subprocess.run([VRAMCTL, "status", "--pid", str(proc.pid)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and f"cap:{256 * MIB}" in r.stdout, r.stdout + r.stderr

        # vramd comes back on the same socket: the hook says hello again and obeys
        srv = hook_listener(path)
        conn, cap = accept_hello(srv, proc.pid)
        assert cap == 256 * MIB
        send_command(conn, MSG_OFFLOAD, 7)
        assert wait_result(conn, 7) == (0, 32 * MIB)
        send_command(conn, MSG_RESTORE, 8)
        assert wait_result(conn, 8) == (0, 32 * MIB)
        assert check(port).text == f"ok {32 * MIB}"
        conn.close()
    finally:
        srv.close()
        proc.kill()
        proc.wait()


GROUP_CONFIG = CONFIG.replace(
    "cmd: [{}]".format(SERVER),
    # two ranks of one workload: the second on a port of its own
    "cmd: [sh, -c, 'PORT=@port2@ {0} & exec {0}']".format(SERVER))


def hook_log_events(path):
    """(pid, what) for each gate, offload, restore line of the shared hook log, in order."""
    events = []
    for line in open(path, errors="replace"):
        if "libvram[" not in line:
            continue
        pid = int(line.split("libvram[")[1].split("]")[0])
        for what in ("gate closed", "gate opened", "offloaded", "restored"):
            if f"info: {what}" in line:
                events.append((pid, what))
    return events


def test_hook_engine_moves_ranks_as_a_group(daemon):
    port2 = free_port()
    d = daemon(GROUP_CONFIG.replace("@port2@", str(port2)))
    d.ctl("start", "fcs", check=0)
    hook = wait_for(lambda: (lambda h: h if h and len(h["processes"]) == 2 and
                             h["measured_bytes"] == 2 * 128 * MIB else None)(
        d.workload("fcs")["hook"]), what="both ranks to register and report their usage")
    pids = sorted(p["pid"] for p in hook["processes"])
    log = os.path.join(d.workdir, "hook.log")

    r = d.ctl("offload", "fcs", check=0)
    assert "128MiB" in r.stdout, r.stdout
    assert d.state("fcs") == "offloaded"
    ev = hook_log_events(log)
    gates = [i for i, e in enumerate(ev) if e[1] == "gate closed"]
    copies = [i for i, e in enumerate(ev) if e[1] == "offloaded"]
    # every gate closed before any rank copied
    assert sorted(ev[i][0] for i in gates) == pids, ev
    assert sorted(ev[i][0] for i in copies) == pids, ev
    assert max(gates) < min(copies), ev

    d.ctl("restore", "fcs", check=0)
    assert d.state("fcs") == "ready"
    ev = hook_log_events(log)[len(ev):]
    restores = [i for i, e in enumerate(ev) if e[1] == "restored"]
    opens = [i for i, e in enumerate(ev) if e[1] == "gate opened"]
    # every rank restored before any gate opened
    assert sorted(ev[i][0] for i in restores) == pids, ev
    assert sorted(ev[i][0] for i in opens) == pids, ev
    assert max(restores) < min(opens), ev
    for port in (d.workload("fcs")["port"], port2):
        c = check(port)
        assert c.status_code == 200 and c.text == f"ok {64 * MIB}", c.text
