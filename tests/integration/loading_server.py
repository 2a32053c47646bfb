# SPDX-License-Identifier: MIT
"""A model server that listens at once and loads its model until a file
appears, as vLLM and llama.cpp do: while loading, its health route answers
503 {"error": "Loading model"}; every other route too.
    loading_server.py PORT FLAG_FILE [--no-health | --no-routes]
--no-health: GET /health is 404 (a server without that route): only
/v1/models tells that it is ready. --no-routes: every GET is 404. Each
probe is counted in FLAG_FILE.hits.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FLAG = int(sys.argv[1]), sys.argv[2]
NO_HEALTH = "--no-health" in sys.argv
NO_ROUTES = "--no-routes" in sys.argv


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with open(FLAG + ".hits", "a") as f:
            f.write(self.path + "\n")
        if NO_ROUTES or (self.path == "/health" and NO_HEALTH):
            return self.reply(404, {"error": "not found"})
        if not os.path.exists(FLAG):
            return self.reply(503, {"error": {"message": "Loading model", "code": 503}})
        if self.path == "/v1/models":
            return self.reply(200, {"object": "list", "data": [{"id": "real"}]})
        return self.reply(200, {"status": "ok"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        if not os.path.exists(FLAG):
            return self.reply(503, {"error": {"message": "Loading model", "code": 503}})
        self.reply(200, {"answer": "hello"})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
