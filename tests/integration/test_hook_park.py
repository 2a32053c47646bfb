# SPDX-License-Identifier: MIT
"""The disk tier of the hook, driven over the hook channel as vramd drives it.

fc-server (tests/fakecuda) fills 64 MiB of "device" memory with a pattern;
the test stands in for vramd on the hook socket (protocol version 3) and
sends OFFLOAD, PARK (with the park file's path), RESTORE and DROP_HOST, then
asks fc-server's /check whether every byte came back. Every RESULT comes
right after a USAGE whose host numbers (pinned, kept, parked) are those after
the command. A full disk is a small tmpfs mounted in a mount namespace of the
process's own (unshare); where none can be made, a file size limit
(RLIMIT_FSIZE, which makes the write fail with EFBIG instead of ENOSPC)
stands in for it.
"""
import os
import resource
import shutil
import stat
import struct
import subprocess
import tempfile

import pytest
import requests

from conftest import free_port, pid_alive, wait_for
from test_hook import (ASAN_OPTIONS, ASAN_RT, FAKECUDA, LIBVRAM, PROTO_MAGIC, SERVER, accept_hello, check,
                       hook_listener, recv_msg)

MIB = 1 << 20
DATA = 64 * MIB
MSG_USAGE, MSG_OFFLOAD, MSG_RESTORE, MSG_RESULT, MSG_PARK, MSG_DROP_HOST = 2, 3, 4, 5, 7, 8
RUNNING, OFFLOADED, PARKED = 0, 2, 5
USAGE_HOST_AT = 8 + 16 * 60  # state, ndev, 16 devices; then host_pinned, host_kept, parked


class Hook:
    """One fc-server whose hook talks to the test as to vramd."""

    def __init__(self, workdir, env=None, prefix=None):
        self.workdir = workdir
        self.port = free_port()
        path = os.path.join(workdir, "hook.sock")
        self.srv = hook_listener(path)
        full = dict(os.environ, PORT=str(self.port), LD_PRELOAD=(ASAN_RT + " " + LIBVRAM).strip(),
                    LD_LIBRARY_PATH=FAKECUDA, VRAM_HOOK_SOCKET=path, VRAM_WORKLOAD="fcs",
                    VRAM_HOOK_CONTEXT_MEMORY="64MiB", VRAM_FAKE_CONTEXT_MEMORY="64MiB",
                    FC_SERVER_MIB=str(DATA // MIB), ASAN_OPTIONS=ASAN_OPTIONS, VRAM_HOOK_PARK_PIECE="4MiB",
                    VRAM_HOOK_LOG=os.path.join(workdir, "hook.log"), VRAM_HOOK_LOG_LEVEL="debug")
        full.update(env or {})
        self.proc = subprocess.Popen((prefix or []) + [SERVER], env=full, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.conn, _cap = accept_hello(self.srv, self.proc.pid)
        self.usage = self.next_usage()
        self.rid = 0

        def listening():
            try:
                return check(self.port).status_code == 200
            except requests.ConnectionError:
                return False
        wait_for(listening, timeout=20, what="fc-server to listen")

    def next_usage(self):
        while True:
            mtype, payload = recv_msg(self.conn)
            if mtype == MSG_USAGE:
                return self.parse_usage(payload)

    @staticmethod
    def parse_usage(payload):
        state, = struct.unpack_from("<I", payload)
        pinned, kept, parked = struct.unpack_from("<QQQ", payload, USAGE_HOST_AT)
        return {"state": state, "host_pinned": pinned, "host_kept": kept, "parked": parked}

    def command(self, mtype, path=None):
        """Sends a command, returns (result, the usage that came right before it)."""
        self.rid += 1
        payload = struct.pack("<II", self.rid, 0)
        if mtype == MSG_PARK:
            raw = path.encode()
            assert len(raw) < 256
            payload += raw + b"\0" * (256 - len(raw))
        self.conn.sendall(struct.pack("<IHHII", PROTO_MAGIC, 3, mtype, len(payload), self.rid) + payload)
        usage = None
        while True:
            t, body = recv_msg(self.conn)
            if t == MSG_USAGE:
                usage = self.parse_usage(body)
            elif t == MSG_RESULT:
                rid, op, status, state, moved = struct.unpack_from("<IIiIQ", body)
                text = body[48:].split(b"\0", 1)[0].decode()
                assert rid == self.rid and op == mtype, (rid, op)
                assert usage is not None, "no USAGE came before the RESULT"
                return {"status": status, "state": state, "bytes": moved, "text": text}, usage

    def ok(self, mtype, path=None):
        res, usage = self.command(mtype, path)
        assert res["status"] == 0, res
        return res, usage

    def check(self):
        c = check(self.port)
        assert c.status_code == 200 and c.text == f"ok {DATA}", c.text

    def close(self):
        self.conn.close()
        self.srv.close()
        self.proc.kill()
        self.proc.wait()
        assert not pid_alive(self.proc.pid)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def hooks():
    made = []

    def make(workdir, env=None, prefix=None):
        h = Hook(workdir, env, prefix)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def test_park_restore_round_trip(hooks):
    workdir = tempfile.mkdtemp(prefix="vramd-park-")
    h = hooks(workdir)
    assert h.usage == {"state": RUNNING, "host_pinned": 0, "host_kept": 0, "parked": 0}
    path = os.path.join(workdir, "fcs.park")

    res, usage = h.ok(MSG_OFFLOAD)
    assert res["bytes"] == DATA
    assert usage == {"state": OFFLOADED, "host_pinned": DATA, "host_kept": 0, "parked": 0}

    res, usage = h.ok(MSG_PARK, path)
    assert res["state"] == PARKED and res["bytes"] == DATA, res
    assert res["text"].startswith(f"parked {DATA} bytes to {path} in "), res["text"]
    assert usage == {"state": PARKED, "host_pinned": 0, "host_kept": 0, "parked": DATA}
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    with open(path, "rb") as f:
        head = f.read(72)
    assert head[:8] == b"VRAMPARK"
    pid, = struct.unpack_from("<I", head, 16)
    piece, count, total = struct.unpack_from("<QQQ", head, 32)
    assert (pid, piece, count, total) == (h.proc.pid, 4 * MIB, DATA // (4 * MIB), DATA)

    res, usage = h.ok(MSG_RESTORE)
    assert res["state"] == RUNNING and res["bytes"] == DATA
    assert res["text"].startswith(f"restored {DATA} bytes from {path} in "), res["text"]
    # back from the disk: no host copy kept, nothing parked, the file gone
    assert usage == {"state": RUNNING, "host_pinned": 0, "host_kept": 0, "parked": 0}
    assert not os.path.exists(path)
    h.check()

    # offloaded and restored from host memory, the buffers are kept; DROP_HOST frees them
    h.ok(MSG_OFFLOAD)
    res, usage = h.ok(MSG_RESTORE)
    assert usage == {"state": RUNNING, "host_pinned": DATA, "host_kept": DATA, "parked": 0}
    res, usage = h.ok(MSG_DROP_HOST)
    assert res["bytes"] == DATA and res["state"] == RUNNING
    assert res["text"] == f"dropped {DATA} bytes of pinned host buffers kept after a restore"
    assert usage == {"state": RUNNING, "host_pinned": 0, "host_kept": 0, "parked": 0}
    h.check()
    res, _ = h.ok(MSG_DROP_HOST)  # nothing left to drop
    assert res["bytes"] == 0


def test_corrupt_and_truncated_file_fail_the_restore(hooks):
    workdir = tempfile.mkdtemp(prefix="vramd-park-")
    h = hooks(workdir)
    path = os.path.join(workdir, "fcs.park")
    h.ok(MSG_OFFLOAD)
    h.ok(MSG_PARK, path)
    whole = open(path, "rb").read()

    # a byte of piece 5 (4 MiB pieces after a 4 KiB header, one allocation)
    bad = bytearray(whole)
    bad[4096 + 5 * 4 * MIB + 777] ^= 0x01
    open(path, "wb").write(bad)
    res, usage = h.command(MSG_RESTORE)
    assert res["status"] == -74 and res["state"] == PARKED, res  # EBADMSG
    assert res["text"] == (f"Failed to restore: checksum mismatch in piece 5 of {path} (allocation 0, bytes "
                           f"{5 * 4 * MIB}..{6 * 4 * MIB}); the process stays parked"), res["text"]
    assert usage["state"] == PARKED and usage["parked"] == DATA

    # cut in piece 9
    open(path, "wb").write(whole[:4096 + 9 * 4 * MIB + 10])
    res, _ = h.command(MSG_RESTORE)
    assert res["status"] == -61 and res["state"] == PARKED, res  # ENODATA
    assert res["text"] == (f"Failed to restore: {path} is truncated: {4096 + 9 * 4 * MIB + 10} bytes, piece 9 "
                           f"(allocation 0) ends at {4096 + 10 * 4 * MIB}; the process stays parked"), res["text"]

    os.unlink(path)
    res, _ = h.command(MSG_RESTORE)
    assert res["status"] == -2, res
    assert res["text"] == f"Failed to restore: the park file {path} is missing; the process stays parked"

    # the file whole again: every byte comes back
    open(path, "wb").write(whole)
    os.chmod(path, 0o600)
    h.ok(MSG_RESTORE)
    h.check()
    assert not os.path.exists(path)


def small_disk(workdir, size_mib):
    """A directory on a file system of size_mib MiB: a tmpfs in a mount namespace of the
    process's own (unshare), else a file size limit that the test sets on the process once
    its memory is made (the fake driver's device memory is files too) and lifts again.
    Returns (command prefix, limit(pid, on), park directory, errno the park fails with)."""
    mnt = os.path.join(workdir, "small")
    os.mkdir(mnt)
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {mnt}"],
                           capture_output=True)
    if probe.returncode == 0:
        prefix = ["unshare", "-rm", "sh", "-c",
                  f'mount -t tmpfs -o size={size_mib}m,mode=0700 tmpfs {mnt} && exec "$0"']
        return prefix, lambda pid, on: None, mnt, 28  # ENOSPC

    def limit(pid, on):
        # no SIGXFSZ handler: the hook writes on threads that block every signal, so the
        # write fails with EFBIG and the program is not killed
        resource.prlimit(pid, resource.RLIMIT_FSIZE,
                         (size_mib * MIB if on else resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return None, limit, mnt, 27  # EFBIG


@pytest.mark.parametrize("preallocate", ["1", "0"])
def test_full_disk_refuses_the_park(hooks, preallocate):
    workdir = tempfile.mkdtemp(prefix="vramd-park-")
    prefix, limit, mnt, errno_ = small_disk(workdir, 16)
    h = hooks(workdir, {"VRAM_HOOK_PARK_PREALLOCATE": preallocate, "VRAM_HOOK_PARK_THREADS": "1"}, prefix)
    path = os.path.join(mnt, "fcs.park")
    h.ok(MSG_OFFLOAD)
    limit(h.proc.pid, True)
    res, usage = h.command(MSG_PARK, path)
    limit(h.proc.pid, False)
    assert res["status"] == -errno_ and res["state"] == OFFLOADED, res
    what = f"no space on {mnt}" if errno_ == 28 else \
        f"file size limit reached on {mnt} (RLIMIT_FSIZE or the file system's)"
    prefix_text = f"Failed to park: {what}: wrote "
    assert res["text"].startswith(prefix_text), res["text"]
    wrote, of = res["text"][len(prefix_text):].split(" bytes;")[0].split(" of ")
    assert int(of) == DATA
    if preallocate == "1":
        assert int(wrote) == 0  # the whole size is asked for first
    else:
        assert 12 * MIB <= int(wrote) <= 16 * MIB  # what fitted, in 4 MiB pieces, one writer
    assert res["text"].endswith("; the process stays offloaded in host memory")
    # as before: offloaded, its host copy in memory, nothing parked, no file left
    assert usage == {"state": OFFLOADED, "host_pinned": DATA, "host_kept": 0, "parked": 0}
    seen = os.path.join(f"/proc/{h.proc.pid}/root", mnt.lstrip("/")) if prefix else mnt
    assert os.listdir(seen) == []
    h.ok(MSG_RESTORE)
    h.check()
