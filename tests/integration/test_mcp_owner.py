# SPDX-License-Identifier: MIT
"""MCP sessions belong to who made them.

Any client could end or push out another client's MCP session: DELETE with
its id, or 64 initializes, which evicted the least recently used sessions
whoever they were. Now a session's owner (a uid on the control socket, an
address and the token on TCP) is the only one who may use or end it, and a
new session never pushes out another owner's (unless it has been idle for
VRAM_MCP_SESSION_IDLE_S).

The gateway names the owner in the X-Vramd-Peer header of each request it
relays to the API's private socket (<socket>.api); these tests speak to that
socket with explicit headers, as the gateway would. The last test goes
through the public listeners and runs once the gateway adds the header.
"""
import glob
import http.client
import json
import os
import socket

import pytest
import requests

from conftest import SOURCE

SESSIONS_MAX, PER_OWNER, TCP_MAX, IDLE_S = 64, 16, 48, 600


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def unix_request(path, method, body=None, headers=None):
    """One request over a Unix socket: (status, headers dict, parsed JSON or None)."""
    c = UnixHTTPConnection(path)
    h = {"Host": "localhost", "Content-Type": "application/json", **(headers or {})}
    c.request(method, "/mcp", body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data) if data else None


def init_msg(id=1):
    return {"jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}


PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}


def uid_peer(uid):
    return f"unix pid=1 uid={uid} gid={uid} groups={uid}"


def tcp_peer(addr, token=False):
    return f"tcp addr={addr} token={1 if token else 0}"


class Api:
    """The API's private socket, with the peer header the gateway would add (None: none)."""

    def __init__(self, d):
        self.path = d.sock + ".api"

    def init(self, peer):
        st, h, body = unix_request(self.path, "POST", init_msg(), self.hdr(peer))
        return st, h.get("mcp-session-id"), h, body

    def session(self, peer):
        st, sid, h, body = self.init(peer)
        assert st == 200 and sid, (st, body)
        return sid

    def ping(self, peer, sid):
        st, _, body = unix_request(self.path, "POST", PING,
                                   {**self.hdr(peer), "Mcp-Session-Id": sid})
        return st, body

    def delete(self, peer, sid):
        st, _, body = unix_request(self.path, "DELETE", None,
                                   {**self.hdr(peer), "Mcp-Session-Id": sid})
        return st, body

    @staticmethod
    def hdr(peer):
        return {"X-Vramd-Peer": peer} if peer else {}


def test_only_the_owner_uses_or_ends_a_session(daemon):
    api = Api(daemon())
    alice, bob = uid_peer(1000), uid_peer(1001)
    sid = api.session(alice)

    # another uid, a TCP client, vramd's own user: none of them may end it or use it
    for other in (bob, tcp_peer("127.0.0.1"), tcp_peer("127.0.0.1", token=True), None):
        st, body = api.delete(other, sid)
        assert st == 404 and body["error"]["message"] == "no such session", (other, st, body)
        st, body = api.ping(other, sid)
        assert st == 404 and "no such session" in body["error"]["message"], (other, st, body)
    # the owner's session lives on
    st, body = api.ping(alice, sid)
    assert st == 200 and body == {"jsonrpc": "2.0", "id": 2, "result": {}}, body
    # the same address with and without the token are different owners
    tsid = api.session(tcp_peer("127.0.0.1", token=True))
    assert api.delete(tcp_peer("127.0.0.1"), tsid)[0] == 404
    assert api.ping(tcp_peer("127.0.0.1", token=True), tsid)[0] == 200

    # the owner ends it
    assert api.delete(alice, sid)[0] == 204
    assert api.ping(alice, sid)[0] == 404

    # without the header: vramd's own user (the private socket is its alone)
    mine = api.session(None)
    assert api.ping(uid_peer(os.geteuid()), mine)[0] == 200
    assert api.delete(uid_peer(os.geteuid()), mine)[0] == 204

    # a header that is not the gateway's
    st, _, _, body = api.init("root please")
    assert st == 400 and "X-Vramd-Peer" in body["error"]["message"], body


def test_a_full_table_pushes_out_no_other_owner(daemon):
    api = Api(daemon())
    alice = uid_peer(1000)
    alice_sid = api.session(alice)

    # past its share, an owner replaces its own least recently used session
    mallory = tcp_peer("127.0.0.1")
    mine = [api.session(mallory) for _ in range(PER_OWNER)]
    extra = api.session(mallory)
    assert api.ping(mallory, mine[0])[0] == 404          # its own oldest went
    assert all(api.ping(mallory, s)[0] == 200 for s in mine[1:] + [extra])
    assert api.ping(alice, alice_sid)[0] == 200          # not alice's

    # TCP clients from three more addresses fill the TCP share (48)
    others = {}
    for addr in ("127.0.0.2", "127.0.0.3"):
        others[addr] = [api.session(tcp_peer(addr)) for _ in range(PER_OWNER)]
    # a new TCP owner finds no room: 503 with Retry-After, nobody's session lost
    st, sid, h, body = api.init(tcp_peer("127.0.0.4"))
    assert st == 503 and sid is None, (st, body)
    assert body["id"] == 1 and body["error"]["code"] == -32603
    assert "too many MCP sessions" in body["error"]["message"]
    assert 1 <= int(h["retry-after"]) <= IDLE_S, h
    assert api.ping(alice, alice_sid)[0] == 200
    for addr, sids in others.items():
        assert all(api.ping(tcp_peer(addr), s)[0] == 200 for s in sids), addr
    # ... while a TCP owner that has sessions still gets one, in place of its oldest
    before = list(others["127.0.0.2"])
    assert api.init(tcp_peer("127.0.0.2"))[0] == 200
    assert api.ping(tcp_peer("127.0.0.2"), before[0])[0] == 404

    # the control socket's share is left: uids fill the table up to 64
    uids = [uid_peer(2000 + i) for i in range(SESSIONS_MAX - TCP_MAX - 1)]
    kept = {u: api.session(u) for u in uids}
    st, _, h, body = api.init(uid_peer(3000))
    assert st == 503 and int(h["retry-after"]) >= 1, (st, body)
    assert api.ping(alice, alice_sid)[0] == 200
    assert all(api.ping(u, s)[0] == 200 for u, s in kept.items())
    # one ends its own: room again
    assert api.delete(uids[0], kept[uids[0]])[0] == 204
    assert api.init(uid_peer(3000))[0] == 200


GATEWAY_SENDS_PEER = any(
    "VRAM_PEER_HEADER" in open(f).read()
    for f in glob.glob(os.path.join(SOURCE, "src", "daemon", "gateway*.c")))


@pytest.mark.skipif(not GATEWAY_SENDS_PEER, reason="the gateway does not name the peer yet")
def test_tcp_clients_cannot_end_or_push_out_a_socket_session(daemon):
    d = daemon()
    # a session made on the control socket (vramd's user)
    st, h, _ = unix_request(d.sock, "POST", init_msg())
    assert st == 200
    sid = h["mcp-session-id"]
    url = d.url + "/mcp"
    # a TCP client names it: not its session
    r = requests.delete(url, headers={"Mcp-Session-Id": sid}, timeout=10)
    assert r.status_code == 404, r.text
    # nor does a forged peer header help: the gateway replaces it
    r = requests.delete(url, headers={"Mcp-Session-Id": sid, "X-Vramd-Peer": uid_peer(0)},
                        timeout=10)
    assert r.status_code == 404, r.text
    # TCP clients fill what they may; the socket's session lives, and it can still make one
    codes = [requests.post(url, json=init_msg(), timeout=10).status_code
             for _ in range(SESSIONS_MAX + 4)]
    assert set(codes) == {200}, codes  # one owner: it replaces its own
    st, _, _ = unix_request(d.sock, "POST", PING, {"Mcp-Session-Id": sid})
    assert st == 200
    st, h, _ = unix_request(d.sock, "POST", init_msg())
    assert st == 200 and h["mcp-session-id"]
    st, _, _ = unix_request(d.sock, "DELETE", None, {"Mcp-Session-Id": sid})
    assert st == 204
