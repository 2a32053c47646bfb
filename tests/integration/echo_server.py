# SPDX-License-Identifier: MIT
"""A plain HTTP/1.1 upstream for the gateway's protocol tests, run by vramd
as a workload: it answers with what it received (method, target, headers,
body) as JSON, and the path picks how the response is framed:
  /chunked    Transfer-Encoding: chunked, three chunks
  /close      no length: the body ends when the connection closes
  /early      a 103 Early Hints interim response before the real one
  /hop        hop-by-hop headers of its own, which must not reach the client
  /slow       answers after 0.3 s (to hold many requests in flight at once)
  /cors       CORS headers of its own ("*"), which vramd replaces with its own
  /silent     answers nothing for 30 s (a hung model server)
  /drip       a chunked body in three parts 1.5 s apart (a slow token stream)
  /stall      the head and one chunk, then nothing for 30 s
anything else: Content-Length. The JSON also carries "peer", the port the
request came from (one per gateway-to-upstream connection).
    echo_server.py PORT
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        seen = json.dumps({
            "method": self.command, "target": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode(errors="replace"), "peer": self.client_address[1],
        }).encode()
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(0.3)
        if path == "/silent":
            time.sleep(30)
        if path == "/early":
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if path in ("/drip", "/stall"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                self.wfile.write(b"2\r\n%d\n\r\n" % i)
                self.wfile.flush()
                time.sleep(1.5 if path == "/drip" else 30)
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/cors":
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Credentials", "true")
        if path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            third = len(seen) // 3
            for part in (seen[:third], seen[third:2 * third], seen[2 * third:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(seen)
            self.close_connection = True
            return
        if path == "/hop":
            self.send_header("Connection", "X-Secret")
            self.send_header("X-Secret", "1")
            self.send_header("Keep-Alive", "timeout=5")
            self.send_header("Proxy-Connection", "keep-alive")
        self.send_header("Content-Length", str(len(seen)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(seen)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # many gateway connections may arrive at once


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
