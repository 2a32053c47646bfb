# SPDX-License-Identifier: MIT
"""daemon.token_file and daemon.tokens: several tokens, any one accepted; a
token file others may read is refused; a reload applies a changed file."""

import os
import subprocess
import tempfile

from conftest import VRAMCTL, VRAMD

OLD = "old-token-0123456789"
NEW = "new-token-9876543210"
LISTED = "listed-token-abcdef"


def write_tokens(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def status_with(d, token):
    return d.http.get(d.url + "/api/status", timeout=10,
                      headers={"Authorization": f"Bearer {token}"}).status_code


def test_token_file_several_tokens_and_reload(daemon):
    tokens = os.path.join(tempfile.mkdtemp(prefix="vramd-tok-"), "tokens")
    write_tokens(tokens, f"# rotated monthly\n{OLD}\n")
    d = daemon(f"daemon:\n  token_file: {tokens}\n  tokens: [{LISTED}]\nworkloads: {{}}\n",
               wait=False)
    d.http.headers["Authorization"] = f"Bearer {OLD}"
    d.wait_ready()
    assert status_with(d, OLD) == 200
    assert status_with(d, LISTED) == 200
    assert status_with(d, NEW) == 401
    # rotate: the new token first, both accepted, then the old one taken away
    write_tokens(tokens, f"{OLD}\n{NEW}\n")
    r = d.sock_request("POST", "/api/reload")
    assert r.status_code == 200, r.text
    assert status_with(d, NEW) == 200 and status_with(d, OLD) == 200
    write_tokens(tokens, f"{NEW}\n")
    assert d.sock_request("POST", "/api/reload").status_code == 200
    assert status_with(d, OLD) == 401
    assert status_with(d, NEW) == 200
    assert status_with(d, LISTED) == 200
    # a file others may read is refused on reload too, and the tokens stay
    os.chmod(tokens, 0o644)
    r = d.sock_request("POST", "/api/reload")
    assert r.status_code == 400
    assert f"{tokens} has mode 0644, expected no access for group and others" in r.text
    assert status_with(d, NEW) == 200 and status_with(d, OLD) == 401


def test_vramctl_reads_the_token_file(daemon, tmp_path):
    """vramctl over TCP takes the token from the daemon's own token file
    (its first token, past comments), by --token-file or $VRAMD_TOKEN_FILE."""
    tokens = str(tmp_path / "tokens")
    write_tokens(tokens, f"# rotated monthly\n\n  {OLD}  \n{NEW}\n")
    d = daemon(f"daemon:\n  token_file: {tokens}\nworkloads: {{}}\n", wait=False)
    d.http.headers["Authorization"] = f"Bearer {OLD}"
    d.wait_ready()
    env = {k: v for k, v in os.environ.items() if k not in ("VRAMD_TOKEN", "VRAMD_TOKEN_FILE")}
    run = lambda *a, **kw: subprocess.run([VRAMCTL, "--url", d.url, *a], capture_output=True, text=True,
                                          env=dict(env, **kw), timeout=30)
    assert run("status").returncode == 1  # no token: 401
    assert run("--token-file", tokens, "status").returncode == 0
    assert run("status", VRAMD_TOKEN_FILE=tokens).returncode == 0
    empty = str(tmp_path / "empty")
    write_tokens(empty, "# nothing yet\n")
    r = run("--token-file", empty, "status")
    assert r.returncode == 2 and "found none" in r.stderr, r.stderr
    r = run("--token-file", str(tmp_path / "missing"), "status")
    assert r.returncode == 2 and "No such file" in r.stderr, r.stderr


def test_world_readable_token_file_is_refused_at_start(tmp_path):
    tokens = tmp_path / "tokens"
    write_tokens(tokens, f"{OLD}\n", 0o604)
    cfg = tmp_path / "vramd.yaml"
    cfg.write_text(f"daemon:\n  token_file: {tokens}\n")
    r = subprocess.run([VRAMD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1
    assert (f"daemon.token_file: {tokens} has mode 0604, expected no access for group and "
            f"others (chmod 600 {tokens})") in r.stderr, r.stderr


def test_env_reference_in_token(tmp_path):
    cfg = tmp_path / "vramd.yaml"
    cfg.write_text("daemon:\n  token: ${env:VRAMD_IT_TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if k != "VRAMD_IT_TOKEN"}
    r = subprocess.run([VRAMD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 1
    assert "environment variable VRAMD_IT_TOKEN is not set" in r.stderr, r.stderr
    env["VRAMD_IT_TOKEN"] = OLD
    r = subprocess.run([VRAMD, "--check-config", str(cfg)], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 0, r.stderr
