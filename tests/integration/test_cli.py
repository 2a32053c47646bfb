# SPDX-License-Identifier: MIT
"""What vramctl shows a user: one result line per action on stdout and
messages on stderr, a progress line on a terminal, the log tail of a failed
start, a fallback placement, sizes that need a unit."""
import os
import subprocess

from conftest import VRAMCTL, VRAMD, DEFAULT_CONFIG


def test_gpus_needs_a_unit(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(DEFAULT_CONFIG.replace("{demo}", "/bin/true"))
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80"], capture_output=True, text=True)
    assert r.returncode != 0, r
    assert 'a GPU size needs a unit: --gpus 2x80GiB, not "2x80"' in r.stderr
    assert r.stdout == ""
    r = subprocess.run([VRAMD, "--check-config", str(cfg), "--gpus", "1x24GiB,80"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert 'a GPU size needs a unit: --gpus 1x24GiB,80GiB, not "1x24GiB,80"' in r.stderr + r.stdout
    # with units it is what it was
    r = subprocess.run([VRAMCTL, "plan", str(cfg), "--gpus", "2x80GiB"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
