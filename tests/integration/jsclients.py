# SPDX-License-Identifier: MIT
"""Runs the Node.js client scripts of tests/integration/js (real client
libraries from npm) and returns the JSON object each prints."""
import json
import os
import shutil
import subprocess

import pytest

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def run_node(script, *args, timeout=120):
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed: these tests need Node.js 18 or later "
                    "(`make deps` installs it)")
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules")):
        pytest.fail("the npm clients are not installed: run "
                    "`npm ci --prefix tests/integration/js`")
    r = subprocess.run([node, os.path.join(JS_DIR, script)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, cwd=JS_DIR)
    assert r.returncode == 0, f"{script} exited with {r.returncode}:\n{r.stdout}\n{r.stderr}"
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing:\n{r.stderr}"
    return json.loads(lines[-1])
