# SPDX-License-Identifier: MIT
"""Who a command runs as, who may act on it, and the owner's share of the limits.

vramd runs as root here (the tests need root to make users); `vramctl run`
runs under setpriv as users made for the test. On the control socket a
command runs as the user who asked, with that user's groups and home; over
TCP only with the token and daemon.run_as; another user cannot stop, remove,
offload or read someone's command. Clients on the control socket keep a
share of the waiting actions and event streams that TCP clients cannot take.

Two kinds of test:
- GATEWAY: through the real control socket and TCP port, as users and
  browsers reach vramd. These need the gateway to send the client's identity
  in X-Vramd-Peer (the front end's part of this change); without it the API
  takes every relayed request for vramd's own, and they fail;
- API: against the private API socket (<socket>.api), with the X-Vramd-Peer
  header the gateway would send: the API's own rules, whatever the front end.
"""
import grp
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import resource

import json

import pytest
import requests

import test_hook as hk
from conftest import DEMO, VRAMCTL, pid_alive, unix_request, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"),
    reason="needs root, useradd and setpriv: it makes users and runs vramctl as them")

PATH = "/usr/local/bin:/usr/bin:/bin"


def job_env():
    """The env of a command sent without vramctl: in the sanitizer build, its runtime first."""
    return {"LD_PRELOAD": hk.ASAN_RT, "ASAN_OPTIONS": hk.ASAN_OPTIONS} if hk.ASAN_RT else {}


def user_env(**extra):
    """A small environment for a user's vramctl: no HOME, so that the command's comes from
    vramd. In the sanitizer build libvram.so needs its runtime first, as in test_run."""
    env = {"PATH": PATH, "ASAN_OPTIONS": hk.ASAN_OPTIONS, **extra}
    if hk.ASAN_RT:
        env["LD_PRELOAD"] = hk.ASAN_RT
    return env

CONFIG = """
daemon:
  log_level: debug
  socket: {ctl}/vramd.sock
  socket_mode: 0666
{extra}gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  quick:
    cmd: [{demo}, --port, "${{PORT}}", --model, quick, --memory, 1GiB, --load-time, 50ms]
    gpus: 1
    memory: 1GiB
    health: /health
  slow:
    cmd: [sleep, "600"]
    gpus: 0
    health: {{ path: /health, start_timeout: 10m }}
"""


class User:
    def __init__(self, tag):
        self.name = f"vrt{tag}{secrets.token_hex(4)}"
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                        "/usr/sbin/nologin", "--home-dir", f"/nonexistent/{self.name}",
                        self.name], check=True, capture_output=True)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, pw.pw_dir

    def cmd(self, *args):
        """args run as this user with its own groups, as a login would give them."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                *args]

    def run(self, *args, timeout=60, **kw):
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout,
                              env=user_env(), cwd="/", **kw)

    def request(self, sock, method, path, json=None):
        """One HTTP request over a Unix socket, sent by a process of this user."""
        code = ("import sys; sys.path.insert(0, %r); from conftest import unix_request; "
                "r = unix_request(%r, %r, %r, json_body=%r); print(r.status_code); print(r.text)"
                % (os.path.dirname(__file__), sock, method, path, json))
        r = self.run("python3", "-c", code)
        assert r.returncode == 0, r.stderr
        status, _, body = r.stdout.partition("\n")
        return int(status), body

    def remove(self):
        subprocess.run(["userdel", self.name], capture_output=True)


@pytest.fixture(scope="module")
def users():
    made = []
    try:
        made.append(User("a"))
        made.append(User("b"))
        yield made
    finally:
        for u in made:
            u.remove()


@pytest.fixture
def vramd(daemon):
    """A vramd whose control socket other users can reach, as an operator grants it."""
    started = []

    def start(extra="", token=None):
        ctl = tempfile.mkdtemp(prefix="vrt-ctl-")
        started.append(ctl)
        os.chmod(ctl, 0o755)
        if token:
            extra += f"  token: {token}\n"
        d = daemon(CONFIG.format(ctl=ctl, extra=extra, demo=DEMO), wait=False)
        d.sock = os.path.join(ctl, "vramd.sock")
        if token:
            d.http.headers["Authorization"] = f"Bearer {token}"
        d.wait_ready()
        # the operator opened it to the machine's users (daemon.socket_mode)
        assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o666
        return d

    yield start
    for ctl in started:
        shutil.rmtree(ctl, ignore_errors=True)


def ids_of(pid):
    """(real, effective, saved, fs) uids and gids of a running process."""
    with open(f"/proc/{pid}/status") as f:
        lines = dict(line.split(":", 1) for line in f if ":" in line)
    return ([int(x) for x in lines["Uid"].split()], [int(x) for x in lines["Gid"].split()])


def adhoc(d, name):
    r = d.get(f"/api/workloads/{name}")
    return r.json() if r.status_code == 200 else None


def running_pid(d, name):
    w = wait_for(lambda: (adhoc(d, name) or {}).get("pid") and adhoc(d, name), 30,
                 what=f"{name} to run")
    d.seen_pids.add(w["pid"])
    return w["pid"], w


# ---------------------------------------------------------------- control socket


def test_vramctl_run_runs_as_the_calling_user(vramd, users):
    """GATEWAY."""
    alice, _ = users
    d = vramd()
    r = alice.run(VRAMCTL, "--url", d.sock, "run", "--", "sh", "-c",
                  'echo "ids $(id -u) $(id -g)"; echo "home=$HOME user=$USER logname=$LOGNAME"; '
                  "grep -E '^(Uid|Gid):' /proc/self/status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"ids {alice.uid} {alice.gid}" in lines, r.stdout
    # vramctl passes the caller's environment, which has no HOME here: the user's own
    assert f"home={alice.home} user={alice.name} logname={alice.name}" in lines, r.stdout
    assert f"Uid:\t{alice.uid}\t{alice.uid}\t{alice.uid}\t{alice.uid}" in lines, r.stdout
    assert f"Gid:\t{alice.gid}\t{alice.gid}\t{alice.gid}\t{alice.gid}" in lines, r.stdout

    # root asking gets root
    r = subprocess.run([VRAMCTL, "--url", d.sock, "run", "--", "sh", "-c", "id -u; id -g"],
                       capture_output=True, text=True, timeout=60, env=user_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0"], r.stdout


def test_the_socket_group_decides_who_may_connect(daemon, users):
    """GATEWAY. daemon.socket_group: the socket is 0660 with that group; a member gets in,
    another user is refused by the kernel."""
    alice, bob = users
    group = f"vrtg{secrets.token_hex(3)}"
    subprocess.run(["groupadd", group], check=True, capture_output=True)
    ctl = tempfile.mkdtemp(prefix="vrt-ctl-")
    try:
        subprocess.run(["usermod", "-a", "-G", group, alice.name], check=True,
                       capture_output=True)
        os.chmod(ctl, 0o755)
        text = CONFIG.format(ctl=ctl, extra="", demo=DEMO).replace(
            "  socket_mode: 0666\n", f"  socket_group: {group}\n")
        d = daemon(text)
        sock = os.path.join(ctl, "vramd.sock")
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(group).gr_gid
        status, body = alice.request(sock, "GET", "/api/status")
        assert status == 200, body
        r = bob.run(VRAMCTL, "--url", sock, "status")
        assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    finally:
        shutil.rmtree(ctl, ignore_errors=True)
        subprocess.run(["groupdel", group], capture_output=True)


def test_one_user_cannot_take_every_adhoc_slot(vramd, users):
    """GATEWAY. A user holds at most 4 ad-hoc workloads; the owner still gets one."""
    alice, _ = users
    d = vramd()
    for i in range(4):
        status, body = alice.request(d.sock, "POST", "/api/workloads",
                                     json={"name": f"a{i}", "cmd": ["sleep", "60"]})
        assert status == 201, body
    status, body = alice.request(d.sock, "POST", "/api/workloads",
                                 json={"name": "a4", "cmd": ["sleep", "60"]})
    assert status == 429, body
    err = json.loads(body)["error"]
    assert err["code"] == "user_limit"
    assert err["message"] == (f"{alice.name} holds 4 ad-hoc workloads, the most one user may; "
                              "end one first (DELETE /api/workloads/NAME)")
    # the owner (root here) is not counted against alice's share
    r = unix_request(d.sock, "POST", "/api/workloads", json_body={"name": "mine",
                                                                  "cmd": ["sleep", "60"]})
    assert r.status_code == 201, r.text
    for name in ["a0", "a1", "a2", "a3", "mine"]:
        unix_request(d.sock, "DELETE", f"/api/workloads/{name}")


def test_a_command_is_its_users_alone(vramd, users):
    """GATEWAY."""
    alice, bob = users
    d = vramd()
    p = subprocess.Popen(alice.cmd(VRAMCTL, "--url", d.sock, "run", "--name", "alices", "--",
                                   "sleep", "60"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=user_env(), cwd="/")
    try:
        pid, w = running_pid(d, "alices")
        uids, gids = ids_of(pid)
        assert uids == [alice.uid] * 4 and gids == [alice.gid] * 4
        assert w["owner"] == {"uid": alice.uid, "gid": alice.gid, "user": alice.name}
        assert [x for x in d.status()["workloads"] if x["name"] == "alices"][0]["owner"][
            "user"] == alice.name

        # bob may neither stop, remove, offload nor read it
        r = bob.run(VRAMCTL, "--url", d.sock, "stop", "alices")
        assert r.returncode == 1
        assert (f"alices runs as uid {alice.uid} ({alice.name}): only that user or root on the "
                "control socket, or a client with the daemon's token, may stop it; this "
                f"request came from uid {bob.uid}") in r.stderr, r.stderr
        for method, path in (("DELETE", "/api/workloads/alices"),
                             ("POST", "/api/workloads/alices/offload"),
                             ("GET", "/api/workloads/alices/logs")):
            status, body = bob.request(d.sock, method, path)
            assert status == 403 and "not_owner" in body, (method, path, status, body)
        # nor sweep it up with an offload or release of everything
        status, body = bob.request(d.sock, "POST", "/api/gpu/release")
        assert status == 200 and "alices" not in body, body
        assert pid_alive(pid) and adhoc(d, "alices")["state"] in ("starting", "ready")

        # the owner may; so may root
        r = alice.run(VRAMCTL, "--url", d.sock, "logs", "alices")
        assert r.returncode == 0, r.stderr
        d.ctl("stop", "alices", check=0)
        out, err = p.communicate(timeout=30)
        assert not pid_alive(pid)
    finally:
        if p.poll() is None:
            p.kill()


def test_a_cwd_the_user_cannot_enter_is_the_reason(vramd, users):
    """GATEWAY."""
    alice, _ = users
    d = vramd()
    private = tempfile.mkdtemp(prefix="vrt-root-only-")  # 0700, root's
    try:
        status, body = alice.request(d.sock, "POST", "/api/workloads",
                                     {"name": "nocwd", "cmd": ["true"], "cwd": private})
        assert status == 201, body
        w = wait_for(lambda: adhoc(d, "nocwd") if adhoc(d, "nocwd")["state"] == "failed" else None,
                     10, what="nocwd to fail")
        assert w["last_error"] == f"cwd {private}: Permission denied (as uid {alice.uid})", w
    finally:
        os.rmdir(private)


def test_the_hook_reaches_a_users_command(vramd, users):
    """GATEWAY. A command of another user registers with its own socket beside the
    control socket and is offloaded by its owner; the state directory stays vramd's."""
    alice, bob = users
    d = vramd()
    env = user_env(LD_LIBRARY_PATH=hk.FAKECUDA, FC_SERVER_MIB="64",
                   VRAM_HOOK_CONTEXT_MEMORY="64MiB", VRAM_FAKE_CONTEXT_MEMORY="64MiB")
    p = subprocess.Popen(alice.cmd(VRAMCTL, "--url", d.sock, "run", "--name", "afcs",
                                   "--memory", "1GiB", "--", hk.SERVER),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd="/")
    try:
        def hooked():
            w = adhoc(d, "afcs")
            return w if w and w["hook"] and w["hook"]["processes"] else None
        w = wait_for(hooked, 30, what="alice's fc-server to register with the hook")
        d.seen_pids.add(w["pid"])
        assert ids_of(w["pid"])[0] == [alice.uid] * 4
        shared = d.sock + ".hook"
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o666
        state = os.path.join(d.workdir, "state")
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(os.path.join(state, "hook.sock")).st_mode) == 0o600
        with open(f"/proc/{w['pid']}/environ", "rb") as f:
            assert f"VRAM_HOOK_SOCKET={shared}".encode() in f.read().split(b"\0")

        r = bob.run(VRAMCTL, "--url", d.sock, "offload", "afcs")
        assert r.returncode == 1 and "may offload it" in r.stderr, r.stderr
        r = alice.run(VRAMCTL, "--url", d.sock, "offload", "afcs")
        assert r.returncode == 0, r.stderr
        w = adhoc(d, "afcs")
        assert w["state"] == "offloaded" and w["engine"]["name"] == "hook", w
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()


# ------------------------------------------------------------------------ TCP


def test_tcp_without_run_as_is_refused(vramd, users, tmp_path):
    """GATEWAY."""
    d = vramd()
    marker = tmp_path / "pwned"
    r = d.post("/api/workloads", json={"name": "x", "cmd": ["sh", "-c", f"id > {marker}"]})
    assert r.status_code == 403, r.text
    msg = r.json()["error"]["message"]
    assert "daemon.token and daemon.run_as" in msg and "vramctl run without --url" in msg
    assert not marker.exists()
    assert adhoc(d, "x") is None
    r = subprocess.run([VRAMCTL, "--url", d.url, "run", "--", "true"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "daemon.run_as" in r.stderr, r.stderr


def test_tcp_with_the_token_runs_as_run_as(vramd, users):
    """GATEWAY."""
    alice, _ = users
    d = vramd(extra=f"  run_as: {alice.name}\n", token="s3cret")
    r = requests.post(d.url + "/api/workloads", json={"name": "nope", "cmd": ["sleep", "30"]},
                      timeout=30)
    assert r.status_code == 401, r.text
    assert d.get("/api/workloads/nope").status_code == 404
    r = d.post("/api/workloads", json={"name": "tok", "cmd": ["sleep", "30"], "env": job_env()})
    assert r.status_code == 201, r.text
    d.seen_pids.add(r.json()["pid"])
    assert ids_of(r.json()["pid"])[0] == [alice.uid] * 4
    assert r.json()["owner"]["user"] == alice.name
    # a token holder may act on it; on the socket, so may its user, not others
    r = d.http.delete(d.url + "/api/workloads/tok", timeout=30)
    assert r.status_code == 200, r.text


# ------------------------------------------------- the API side (private socket)


def api(d, method, path, peer=None, json=None):
    headers = {"X-Vramd-Peer": peer} if peer else None
    return unix_request(d.sock + ".api", method, path, json_body=json, headers=headers)


def mcp_call(tool, arguments, id=1):
    """A stateless (2026-07-28) MCP tools/call: its body and headers."""
    msg = {"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments,
                      "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
               "Mcp-Name": tool, "Content-Type": "application/json"}
    return msg, headers


def mcp_api(d, tool, arguments, peer=None):
    """One MCP tool call on the private API socket as peer; its result object."""
    msg, headers = mcp_call(tool, arguments)
    if peer:
        headers["X-Vramd-Peer"] = peer
    r = unix_request(d.sock + ".api", "POST", "/mcp", json_body=msg, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def tcp_peer(token=False, addr="127.0.0.1"):
    return f"tcp addr={addr} token={1 if token else 0}"


def unix_peer(u):
    return f"unix pid=1 uid={u.uid} gid={u.gid} groups={u.gid}"


def test_api_decides_by_the_peer(vramd, users, tmp_path):
    """API."""
    alice, bob = users
    d = vramd()
    marker = tmp_path / "ran"
    job = {"name": "x", "cmd": ["sh", "-c", f"touch {marker}"]}
    r = api(d, "POST", "/api/workloads", tcp_peer(), job)
    assert r.status_code == 403 and r.json()["error"]["code"] == "cannot_run", r.text
    assert "set daemon.token and daemon.run_as" in r.json()["error"]["message"]
    r = api(d, "POST", "/api/workloads", tcp_peer(token=True), job)
    assert r.status_code == 403 and "needs daemon.run_as" in r.json()["error"]["message"]
    assert not marker.exists() and adhoc(d, "x") is None
    for bad in ("tcp", "unix uid=0", "unix pid=1 uid=0 gid=0 groups=0 extra"):
        r = api(d, "GET", "/api/status", bad)
        assert r.status_code == 400 and "X-Vramd-Peer" in r.json()["error"]["message"], bad

    # on the socket: as the peer; the owner and token holders may act on it, others not
    r = api(d, "POST", "/api/workloads", unix_peer(alice), {"name": "a1", "cmd": ["sleep", "30"],
                                                          "env": job_env()})
    assert r.status_code == 201, r.text
    pid = r.json()["pid"]
    d.seen_pids.add(pid)
    assert ids_of(pid)[0] == [alice.uid] * 4
    for peer in (unix_peer(bob), tcp_peer()):
        r = api(d, "POST", "/api/workloads/a1/stop", peer)
        assert r.status_code == 403 and "a1 runs as uid" in r.text, r.text
        r = api(d, "PUT", "/api/workloads/a1/idle", peer, {"release_after": 1})
        assert r.status_code == 403, r.text
        r = api(d, "POST", "/api/gpu/timeout", peer, {"timeout": 1, "workload": "a1"})
        assert r.status_code == 403, r.text
    # the MCP tools follow the same rule
    res = mcp_api(d, "stop_workload", {"workload": "a1"}, tcp_peer())
    assert res["isError"] and "a1 runs as uid" in res["content"][0]["text"], res
    res = mcp_api(d, "release_gpu", {"workload": "a1"}, unix_peer(bob))
    assert res["isError"] and "may release it" in res["content"][0]["text"], res
    assert pid_alive(pid)
    # configured workloads stay everyone's
    assert api(d, "POST", "/api/workloads/quick/start", tcp_peer()).status_code == 200
    r = api(d, "DELETE", "/api/workloads/a1", tcp_peer(token=True))
    assert r.status_code == 200, r.text
    assert not pid_alive(pid)
    # without the header: vramd itself (only its own user can open this socket)
    r = api(d, "POST", "/api/workloads", None, {"name": "mine", "cmd": ["sleep", "30"], "env": job_env()})
    assert r.status_code == 201 and r.json()["owner"]["uid"] == 0, r.text
    d.seen_pids.add(r.json()["pid"])


def test_api_runs_tcp_commands_as_run_as(vramd, users):
    """API."""
    alice, _ = users
    d = vramd(extra=f"  run_as: {alice.uid}\n")
    r = api(d, "POST", "/api/workloads", tcp_peer(), {"name": "t0", "cmd": ["true"]})
    assert r.status_code == 403 and "daemon.token" in r.text, r.text
    r = api(d, "POST", "/api/workloads", tcp_peer(token=True),
            {"name": "t1", "cmd": ["sleep", "30"], "env": job_env()})
    assert r.status_code == 201, r.text
    d.seen_pids.add(r.json()["pid"])
    assert ids_of(r.json()["pid"])[0] == [alice.uid] * 4
    assert r.json()["owner"] == {"uid": alice.uid, "gid": alice.gid, "user": alice.name}


# ---------------------------------------------------------- the owner's share

N_TCP = 1030          # more than VRAM_API_PENDING_MAX
PENDING_MAX, PENDING_KEPT = 1024, 256
SSE_MAX, SSE_KEPT = 64, 16


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if want < 2 * N_TCP + 100:
        pytest.skip(f"needs {2 * N_TCP + 100} descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(connect, n, request):
    """n connections each sending request; returns the sockets."""
    socks = []
    for i in range(n):
        s = connect(i)
        s.sendall(request)
        socks.append(s)
    return socks


def answer_complete(buf):
    """Whether buf holds a whole answer's head, and its body when it says how long that is
    (an event stream's answer is complete with its head)."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def statuses(socks, seconds):
    """(HTTP status, what came) of each socket's answer within seconds; None: still waiting."""
    got, bufs = {}, {s.fileno(): b"" for s in socks}
    poll = select.poll()
    for s in socks:
        poll.register(s, select.POLLIN)
    deadline = time.monotonic() + seconds
    while len(got) < len(socks):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poll.poll(left * 1000):
            data = os.read(fd, 65536)
            bufs[fd] += data
            if data and not answer_complete(bufs[fd]):
                continue
            poll.unregister(fd)
            line = bufs[fd].split(b"\r\n", 1)[0].split()
            got[fd] = (int(line[1]) if len(line) > 1 else 0, bufs[fd])
    return [got.get(s.fileno()) for s in socks]


def check_pending_share(d, connect, head):
    req = (f"POST /api/workloads/slow/start HTTP/1.1\r\n{head}"
           "Content-Length: 0\r\n\r\n").encode()
    socks = flood(connect, N_TCP, req)
    try:
        got = statuses(socks, 5)
        refused = [g for g in got if g is not None]
        assert len(refused) == N_TCP - (PENDING_MAX - PENDING_KEPT), len(refused)
        assert all(g[0] == 503 for g in refused), refused[:3]
        assert b"the other 256 are kept for the control socket" in refused[0][1]
        # the owner is still answered: a start over the socket waits its turn and succeeds
        d.ctl("start", "quick", check=0, timeout=60)
        r = d.sock_request("GET", "/api/status")
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()


def check_sse_share(d, connect, head):
    req = f"GET /api/events HTTP/1.1\r\n{head}\r\n".encode()
    socks = flood(connect, SSE_MAX + 4, req)
    try:
        got = statuses(socks, 5)
        assert [g[0] for g in got].count(200) == SSE_MAX - SSE_KEPT, [g and g[0] for g in got]
        assert [g[0] for g in got].count(503) == SSE_KEPT + 4
        u = socket.socket(socket.AF_UNIX)
        u.connect(d.sock)
        u.sendall(f"GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert statuses([u], 5)[0][0] == 200
        u.close()
    finally:
        for s in socks:
            s.close()


def test_api_keeps_the_owners_share(vramd, users, many_fds):
    """API."""
    d = vramd()

    def connect(i):
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.sock + ".api")
        return s
    head = f"Host: localhost\r\nX-Vramd-Peer: {tcp_peer()}\r\n"
    check_pending_share(d, connect, head)
    check_sse_share(d, connect, head)

    # MCP tool calls that wait: TCP clients leave 64 of 256 to the socket
    msg, headers = mcp_call("start_workload", {"workload": "slow", "timeout": 600})
    body = json.dumps(msg).encode()
    req = ("POST /mcp HTTP/1.1\r\nHost: localhost\r\n"
           f"X-Vramd-Peer: {tcp_peer()}\r\nContent-Length: {len(body)}\r\n" +
           "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body
    socks = flood(connect, 256 + 4, req)
    try:
        got = [g for g in statuses(socks, 5) if g is not None]
        assert len(got) == 64 + 4, len(got)
        assert all(b"64 of them kept for the control socket" in g[1] for g in got), got[0]
        res = mcp_api(d, "start_workload", {"workload": "quick"})  # vramd's own user
        assert not res["isError"], res
    finally:
        for s in socks:
            s.close()


def test_tcp_clients_cannot_lock_out_the_owner(vramd, users, many_fds):
    """GATEWAY."""
    d = vramd()

    def connect(i):
        # many source addresses, so that a per-address limit does not stop the flood first
        s = socket.socket(socket.AF_INET)
        s.bind((f"127.0.{i // 200}.{2 + i % 200}", 0))
        s.connect(("127.0.0.1", d.port))
        return s
    head = f"Host: 127.0.0.1:{d.port}\r\n"
    check_pending_share(d, connect, head)
    check_sse_share(d, connect, head)
