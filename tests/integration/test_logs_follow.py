# SPDX-License-Identifier: MIT
"""Following a workload's log: GET /api/workloads/{name}/logs?follow=1 and
`vramctl logs -f`. The stream starts with the last lines and then carries
every byte the workload writes, across rotations, until the client goes,
the workload is removed or vramd drains."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import requests

from conftest import VRAMCTL, wait_for

from test_output_relay import CHATTY

# chatty prints "tick N" every 50 ms; a 1 KiB log rotates every ~110 ticks.
CONFIG = f"""
daemon:
  log_level: debug
  workload_log_max: 1KiB
  workload_log_keep: 2
gpus:
  reserve: 0
defaults:
  idle: {{ offload_after: never, release_after: never }}
  stop_grace: 3s
workloads:
  chatty:
    cmd: [{sys.executable}, {CHATTY}, "${{PORT}}"]
    gpus: 0
    health: /health
    restart: never
"""


class Follower:
    """Reads a followed log in a thread; .text is what came so far, .ended once the stream ended."""

    def __init__(self, url, headers=None):
        self.r = requests.get(url, stream=True, timeout=60, headers=headers or {})
        self.text = ""
        self.ended = False
        self.error = None
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        try:
            for piece in self.r.iter_content(chunk_size=None, decode_unicode=False):
                self.text += piece.decode()
            self.ended = True
        except Exception as e:  # a stream cut short is an error, not an end
            self.error = e

    def ticks(self):
        return [int(n) for n in re.findall(r"^tick (\d+)$", self.text, re.M)]

    def close(self):
        self.r.close()


def consecutive(ticks):
    return all(b == a + 1 for a, b in zip(ticks, ticks[1:]))


def test_follow_sends_the_tail_then_every_line_across_rotations(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    wait_for(lambda: "tick 5\n" in d.get("/api/workloads/chatty/logs").text, 15, what="ticks in the log")
    f = Follower(d.url + "/api/workloads/chatty/logs?follow=1&tail=3")
    try:
        assert f.r.status_code == 200
        assert f.r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert f.r.headers.get("Transfer-Encoding") == "chunked"
        # The tail came at once: 3 lines of what was already there.
        wait_for(lambda: len(f.text.splitlines()) >= 3, 10, what="the tail")
        first = f.ticks()[0]
        # Then on: 300 ticks is past two rotations of the 1 KiB file, none lost or repeated.
        wait_for(lambda: len(f.ticks()) >= 300 or f.ended, 120, interval=0.2,
                 what="300 ticks through the stream")
        got = f.ticks()
        assert consecutive(got), [(a, b) for a, b in zip(got, got[1:]) if b != a + 1][:5]
        assert got[0] == first
        assert os.path.exists(os.path.join(d.workdir, "state", "logs", "chatty.log.2"))
        assert not f.ended
    finally:
        f.close()


def test_follow_ends_when_the_workload_is_removed(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    f = Follower(d.url + "/api/workloads/chatty/logs?follow=1")
    try:
        wait_for(lambda: len(f.ticks()) >= 3, 15, what="ticks through the stream")
        with open(d.config_path, "w") as cf:
            cf.write(CONFIG.split("workloads:")[0] + "workloads: {}\n")
        r = d.post("/api/reload")
        assert r.status_code == 200, r.text
        wait_for(lambda: f.ended or f.error, 30, what="the stream to end")
        assert f.ended and f.error is None, f.error  # a clean end, not a cut
    finally:
        f.close()


def test_follow_ends_cleanly_when_vramd_drains(daemon):
    # A restart in place drains the clients: the stream gets its last chunk.
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    f = Follower(d.url + "/api/workloads/chatty/logs?follow=1")
    try:
        wait_for(lambda: len(f.ticks()) >= 3, 15, what="ticks through the stream")
        d.ctl("daemon", "restart", check=0)
        wait_for(lambda: f.ended or f.error, 30, what="the stream to end")
        assert f.ended and f.error is None, f.error
        # the workload ran on; following it again works with the new image
        g = Follower(d.url + "/api/workloads/chatty/logs?follow=1&tail=0")
        try:
            wait_for(lambda: len(g.ticks()) >= 3, 15, what="ticks after the restart")
        finally:
            g.close()
    finally:
        f.close()


def test_streams_end_cleanly_when_vramd_stops(daemon):
    # SIGTERM: a followed log and the event stream get their last chunk (over
    # TCP and the socket, both through the gateway), not a cut that a client
    # takes for a broken connection.
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    f = Follower(d.url + "/api/workloads/chatty/logs?follow=1")
    ev = Follower(d.url + "/api/events")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(d.sock)
    s.sendall(b"GET /api/workloads/chatty/logs?follow=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while got.count(b"tick ") < 3:
        piece = s.recv(65536)
        assert piece, got
        got += piece
    wait_for(lambda: len(f.ticks()) >= 3, 15, what="ticks through the stream")
    wait_for(lambda: "vramd events" in ev.text, 15, what="the event stream")
    assert d.stop() == 0
    wait_for(lambda: (f.ended or f.error) and (ev.ended or ev.error), 10, what="the streams to end")
    assert f.ended and f.error is None, f.error
    assert ev.ended and ev.error is None, ev.error
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        got += piece
    s.close()
    assert got.endswith(b"\r\n0\r\n\r\n"), got[-200:]


def test_follow_refusals(daemon):
    d = daemon(CONFIG)
    r = d.get("/api/workloads/chatty/logs?follow=yes")
    assert r.status_code == 400 and "follow: expected 1 or 0" in r.json()["error"]["message"]
    r = d.get("/api/workloads/chatty/logs?follow=1&offset=0")
    assert r.status_code == 400 and "offset and follow=1" in r.json()["error"]["message"]
    r = d.get("/api/workloads/nope/logs?follow=1")
    assert r.status_code == 404
    # follow=0 is the plain tail
    assert d.get("/api/workloads/chatty/logs?follow=0").status_code == 200


def test_vramctl_logs_follow(daemon):
    d = daemon(CONFIG)
    d.ctl("start", "chatty", check=0)
    for url in (d.sock, d.url):
        p = subprocess.Popen([VRAMCTL, "--url", url, "logs", "-f", "-n", "2", "chatty"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            while len(lines) < 30:
                line = p.stdout.readline()
                assert line, p.stderr.read()
                if line.startswith("tick "):
                    lines.append(int(line.split()[1]))
            assert consecutive(lines), lines
            assert p.poll() is None  # still following
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(10)
    r = d.ctl("logs", "-f", "nope", check=1)
    assert 'no workload named "nope"' in r.stderr
    # The stream ends when the workload goes: vramctl then exits 0.
    p = subprocess.Popen([VRAMCTL, "--url", d.sock, "logs", "-f", "chatty"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline()
        with open(d.config_path, "w") as cf:
            cf.write(CONFIG.split("workloads:")[0] + "workloads: {}\n")
        assert d.post("/api/reload").status_code == 200
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
