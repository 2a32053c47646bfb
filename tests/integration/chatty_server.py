# SPDX-License-Identifier: MIT
"""A workload that talks: it prints "tick N" every 50 ms from its main thread
(print, so a write that fails ends it with BrokenPipeError) and answers
GET /health on its port from another thread.
    chatty_server.py PORT
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    n = 0
    while True:
        print(f"tick {n}", flush=True)
        n += 1
        time.sleep(0.05)


if __name__ == "__main__":
    main()
