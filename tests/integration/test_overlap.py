# SPDX-License-Identifier: MIT
"""Overlapped swaps through the real vramd, on the fake CUDA driver.

Two fc-server workloads (the hook's test server: 192 MiB of "device" data
with a pattern, /check verifies it) share one simulated GPU that holds one
of them: each declares 256 MiB (192 MiB of data and a 64 MiB context) on a
448 MiB GPU, in 12 allocations as a model's weights are in many. Restoring b while a is ready evicts a; a's offload reports the
memory it gives back (PROGRESS) and b's restore creates memory only within
what vramd grants it (GRANT). Both fake drivers add what they hold to one
shared tally (VRAM_FAKE_SHARED_USAGE), whose peak must never pass the GPU's
448 MiB, with the two transfers running at once and when one of them fails
in the middle.
"""
import os
import struct
import time

import requests

from conftest import wait_for
from test_hook import ASAN_OPTIONS, ASAN_RT, FAKECUDA, SERVER

MIB = 1 << 20
GPU = 448 * MIB

WORKLOAD = """
  @name@:
    cmd: [@server@]
    gpus: 1
    memory: 256MiB
    health: /health
    offload: hook
    env:
      LD_LIBRARY_PATH: @fakecuda@
      VRAM_HOOK_CONTEXT_MEMORY: 64MiB
      VRAM_FAKE_CONTEXT_MEMORY: 64MiB
      VRAM_FAKE_SHARED_USAGE: "@tally@"
      VRAM_FAKE_COPY_DELAY_US: "15000"
      VRAM_HOOK_COPY_CHUNK: 16MiB
      VRAM_HOOK_LOG: "@log@"
      FC_SERVER_MIB: "192"
      FC_SERVER_PIECES: "12"
      ASAN_OPTIONS: "@asan@"
      LD_PRELOAD: "@asan_rt@"
@extra@"""


def config(tmp, extra_a="", extra_b=""):
    text = """
daemon:
  log_level: debug
gpus:
  reserve: 0
host:
  reserve: 0
defaults:
  idle: { offload_after: never, release_after: never }
  stop_grace: 3s
workloads:"""
    for name, extra in (("a", extra_a), ("b", extra_b)):
        text += (WORKLOAD.replace("@name@", name).replace("@server@", SERVER).replace("@fakecuda@", FAKECUDA)
                 .replace("@tally@", os.path.join(tmp, "tally")).replace("@log@", os.path.join(tmp, f"hook-{name}.log"))
                 .replace("@asan@", ASAN_OPTIONS).replace("@asan_rt@", ASAN_RT).replace("@extra@", extra))
    return text


def tally(tmp):
    with open(os.path.join(tmp, "tally"), "rb") as f:
        return struct.unpack("<QQ", f.read(16))


def reset_peak(tmp):
    used, _ = tally(tmp)
    with open(os.path.join(tmp, "tally"), "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<Q", used))


def check(d, name):
    port = d.workload(name)["port"]
    return requests.get(f"http://127.0.0.1:{port}/check", timeout=30).text


def both_offloaded_a_warm(d, tmp):
    """a ready with its host buffers made (offloaded once), b offloaded."""
    d.ctl("start", "a", check=0)
    d.ctl("offload", "a", check=0)
    d.ctl("restore", "a", check=0)
    d.ctl("start", "b", check=0)      # evicts a (a start does not overlap)
    assert d.state("a") == "offloaded"
    d.ctl("offload", "b", check=0)
    d.ctl("restore", "a", check=0)    # fits: b is offloaded
    assert d.state("a") == "ready" and d.state("b") == "offloaded"
    reset_peak(tmp)


def grants(d):
    return [l for l in d.log_text().splitlines() if "b: restore granted" in l]


def test_overlapped_swap_stays_within_the_gpu(daemon, tmp_path):
    tmp = str(tmp_path)
    d = daemon(config(tmp), gpus=f"1x{GPU // MIB}MiB")
    both_offloaded_a_warm(d, tmp)
    t0 = time.monotonic()
    r = d.ctl("restore", "b", check=0)
    swap = time.monotonic() - t0
    assert d.state("b") == "ready", r.stdout + r.stderr
    assert d.state("a") == "offloaded"
    assert check(d, "b") == f"ok {192 * MIB}"
    used, peak = tally(tmp)
    assert peak <= GPU, f"peak {peak / MIB:.0f} MiB over the GPU's {GPU / MIB:.0f} MiB"
    g = grants(d)
    # b was granted in pieces as a gave memory back, before all of it fit
    assert any("(all)" not in l for l in g), g
    log = d.log_text()
    log = log[log.rindex("b: offloaded -> restoring"):]  # this swap
    first_grant = log.index("b: restore granted")
    a_done = log.index("a: offloading -> offloaded")
    assert first_grant < a_done, "b's restore began only after a's offload ended"
    # and a's memory did go to b while a still copied: more than one grant before a was done
    assert log[:a_done].count("b: restore granted") >= 2, log[:a_done]
    # back the other way, with the contents of both intact
    d.ctl("restore", "a", check=0)
    assert d.state("a") == "ready" and d.state("b") == "offloaded"
    assert check(d, "a") == f"ok {192 * MIB}"
    assert tally(tmp)[1] <= GPU
    print(f"swap {swap:.2f} s, peak {peak / MIB:.0f} MiB, {len(g)} grants")


def test_victim_copy_fails_mid_swap(daemon, tmp_path):
    """a's copy fails after some of its memory went to b: a stays offloaded
    (nothing taken back over b's grant), b comes back whole, the GPU holds."""
    tmp = str(tmp_path)
    # armed right before the swap: the 6th of a's 12 copies out fails
    d = daemon(config(tmp, extra_a='      VRAM_FAKE_FAIL_COPY: "6"\n      VRAM_FAKE_ARM: "@arm@"\n'
                      .replace("@arm@", os.path.join(tmp, "arm-a"))), gpus=f"1x{GPU // MIB}MiB")
    both_offloaded_a_warm(d, tmp)
    open(os.path.join(tmp, "arm-a"), "w").close()
    d.ctl("restore", "b", check=None)
    wait_for(lambda: d.state("b") in ("ready", "offloaded", "failed") and d.state("a") != "offloading",
             what="the swap to end")
    assert d.state("b") == "ready"
    assert check(d, "b") == f"ok {192 * MIB}"
    assert d.state("a") == "offloaded", d.workload("a")
    assert "copy" in d.workload("a")["last_error"]
    assert tally(tmp)[1] <= GPU
    # what went and what stayed both come back: b goes, a restores whole
    d.ctl("offload", "b", check=0)
    d.ctl("restore", "a", check=0)
    assert check(d, "a") == f"ok {192 * MIB}"
    assert tally(tmp)[1] <= GPU


def test_restore_fails_mid_swap(daemon, tmp_path):
    """b's mapping fails half-way: b is undone and stays offloaded, a's
    offload goes on, the GPU holds, and b restores whole afterwards."""
    tmp = str(tmp_path)
    # armed right before the swap: the 7th of b's 12 mappings fails
    d = daemon(config(tmp, extra_b='      VRAM_FAKE_FAIL_MAP: "7"\n      VRAM_FAKE_ARM: "@arm@"\n'
                      .replace("@arm@", os.path.join(tmp, "arm-b"))), gpus=f"1x{GPU // MIB}MiB")
    both_offloaded_a_warm(d, tmp)
    open(os.path.join(tmp, "arm-b"), "w").close()
    d.ctl("restore", "b", check=None)
    wait_for(lambda: d.state("b") in ("ready", "offloaded", "failed") and d.state("a") != "offloading",
             what="the swap to end")
    assert tally(tmp)[1] <= GPU
    assert d.state("b") == "offloaded", d.workload("b")
    assert "cannot map" in d.workload("b")["last_error"], d.workload("b")["last_error"]
    assert d.state("a") == "offloaded"  # its offload went on: the room is there now
    d.ctl("restore", "b", check=0)
    assert d.state("b") == "ready"
    assert check(d, "b") == f"ok {192 * MIB}"
    assert tally(tmp)[1] <= GPU


def host_kept(d, name):
    procs = (d.workload(name).get("hook") or {}).get("processes") or []
    return sum(p.get("host_kept_bytes") or 0 for p in procs)


def test_host_buffers_made_ahead(daemon, tmp_path):
    """A ready workload makes the pinned buffers of its first offload in the
    background when the host budget has room: they count as kept, and that
    first offload makes none (it runs at link speed)."""
    tmp = str(tmp_path)
    d = daemon(config(tmp), gpus=f"1x{GPU // MIB}MiB")
    d.ctl("start", "a", check=0)
    wait_for(lambda: host_kept(d, "a") == 192 * MIB, what="a's host buffers made ahead")
    assert d.status()["host"]["kept"] >= 192 * MIB
    d.ctl("offload", "a", check=0)
    log = open(os.path.join(tmp, "hook-a.log")).read()
    assert "made 201326592 bytes of pinned host buffers ahead" in log, log
    offload = [l for l in log.splitlines() if "offloaded 201326592 bytes" in l]
    assert offload and "pinned" not in offload[0], offload  # nothing made on the spot
    d.ctl("restore", "a", check=0)
    assert check(d, "a") == f"ok {192 * MIB}"


def test_host_buffers_not_made_ahead_without_room(daemon, tmp_path):
    """Off in the config, or more than the budget has room for: nothing is made ahead."""
    tmp = str(tmp_path)
    d = daemon(config(tmp).replace("host:\n  reserve: 0\n", "host:\n  reserve: 0\n  limit: 100MiB\n"),
               gpus=f"1x{GPU // MIB}MiB")
    d.ctl("start", "a", check=0)
    time.sleep(4)  # past the 2.5 s a workload is ready before it is asked
    assert host_kept(d, "a") == 0
    d2 = daemon(config(tmp).replace("host:\n  reserve: 0\n", "host:\n  reserve: 0\n  premake_buffers: false\n"),
                gpus=f"1x{GPU // MIB}MiB")
    d2.ctl("start", "b", check=0)
    time.sleep(4)
    assert host_kept(d2, "b") == 0
