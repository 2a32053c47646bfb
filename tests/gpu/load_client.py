# SPDX-License-Identifier: MIT
"""A small HTTP load client for the GPU checks (the GPU host has no wrk):
C connections with keep-alive, each sending GET URL in a loop for S seconds.
Prints one JSON line: requests, 2xx, other statuses, connection errors (a
refused or reset connection, a timeout) and the longest request in ms.
Usage: load_client.py URL SECONDS [CONNECTIONS]"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
seconds = float(sys.argv[2])
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
path = url.path + ("?" + url.query if url.query else "")
lock = threading.Lock()
totals = {"requests": 0, "ok": 0, "non_2xx": 0, "errors": 0, "max_ms": 0.0, "first_error": None}


def worker(end):
    n = ok = bad = err = 0
    worst = 0.0
    first = None
    c = None
    while time.monotonic() < end:
        if c is None:
            c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        t = time.monotonic()
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            n += 1
            if 200 <= r.status < 300:
                ok += 1
            else:
                bad += 1
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                c = None
        except (OSError, http.client.HTTPException) as e:
            err += 1
            first = first or repr(e)
            c.close()
            c = None
            time.sleep(0.01)
        worst = max(worst, (time.monotonic() - t) * 1000)
    with lock:
        totals["requests"] += n
        totals["ok"] += ok
        totals["non_2xx"] += bad
        totals["errors"] += err
        totals["max_ms"] = max(totals["max_ms"], round(worst, 1))
        totals["first_error"] = totals["first_error"] or first


end = time.monotonic() + seconds
threads = [threading.Thread(target=worker, args=(end,)) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(totals), flush=True)
