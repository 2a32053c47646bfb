# SPDX-License-Identifier: MIT
"""The start limit (restart: {limit, window}): a workload whose command fails
at once is retried `limit` times, then stays failed with the reason, and a
start asked for by hand counts again from zero."""
import time

from conftest import wait_for

CONFIG = """
daemon:
  log_level: debug
gpus:
  reserve: 0
workloads:
  broken:
    cmd: [sh, -c, "echo starting; exit 1"]
    gpus: 0
    health: none
    restart: { policy: on-failure, backoff_max: 1s, limit: 3, window: 10s }
"""

REASON = "failed to start 3 times within 10s; start it again by hand or with a request"


def spawns(d):
    """How many processes the workload's log says were started."""
    text = d.get("/api/workloads/broken/logs?tail=1000").text
    return sum(1 for line in text.splitlines() if "replica 0: pid " in line)


def wait_limit(d):
    return wait_for(lambda: (lambda w: w if w["state"] == "failed" and
                             w.get("last_error") == REASON else None)(d.workload("broken")),
                    20, what="the start limit")


def test_start_limit_reached_and_reset_by_hand(daemon):
    d = daemon(CONFIG)
    assert d.post("/api/workloads/broken/start").status_code in (200, 409, 500, 503)
    w = wait_limit(d)
    assert w["restarts"] == 2, w
    assert spawns(d) == 3
    assert REASON in d.log_text()
    # No more retries: the count stays where it is.
    time.sleep(3.5)
    w = d.workload("broken")
    assert w["state"] == "failed" and w["last_error"] == REASON, w
    assert spawns(d) == 3

    # A start by hand counts from zero again: three more tries, then failed again.
    d.ctl("start", "broken")
    wait_for(lambda: spawns(d) == 6 and d.workload("broken")["last_error"] == REASON, 20,
             what="three more tries after the start by hand")
    time.sleep(2.5)
    assert spawns(d) == 6
    assert d.state("broken") == "failed"


def test_without_limit_it_keeps_retrying(daemon):
    """limit: 0 is today's behaviour: retried for as long as it fails."""
    d = daemon(CONFIG.replace("limit: 3", "limit: 0"))
    d.post("/api/workloads/broken/start")
    wait_for(lambda: spawns(d) >= 5, 20, what="five tries")
    assert d.workload("broken")["last_error"] != REASON
