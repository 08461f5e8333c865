"""``facewarden --server URL``: the CLI as a client of a real ``facewarden serve``, with the
caller's token; the same JSON contracts and exit codes as the local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from webserver import running_server

from conftest import PROBES, REFERENCE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    with running_server(tmp_path_factory.mktemp("remote"), pipeline) as s:
        yield s


@pytest.fixture
def cli(server, tmp_path):
    """Run the CLI; ``remote=True`` through the server (no data directory at all)."""

    def run(*args, user="ines", remote=True, ok=True, stdin=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEWARDEN_")}
        env |= {"COLUMNS": "200", "XDG_CONFIG_HOME": str(tmp_path / "config")}
        if user:
            env["FACEWARDEN_TOKEN"] = server.tokens[user]
        if remote:
            env["FACEWARDEN_URL"] = server.url
            env["FACEWARDEN_DATA_DIR"] = str(tmp_path / "nowhere")  # never opened
        else:
            env["FACEWARDEN_DATA_DIR"] = str(server.data_dir)
            if server.database_url:
                env["FACEWARDEN_DATABASE_URL"] = server.database_url
        feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        proc = subprocess.run(
            [sys.executable, "-m", "facewarden", *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            **feed,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def shape(value):
    """The keys and types of a JSON value (ids and timings differ between two searches)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_search_has_the_local_json_contract(cli, tmp_path):
    args = ("search", PROBES / "obama_and_biden.jpg", "--case", "CASE-1", "--json")
    remote = json.loads(cli(*args).stdout)
    local = json.loads(cli(*args, remote=False).stdout)
    assert shape(remote) == shape(local)
    assert remote["probe"] == local["probe"] == str(PROBES / "obama_and_biden.jpg")
    ids = [[c["face_id"] for c in f["candidates"]] for f in remote["faces"]]
    assert ids == [[c["face_id"] for c in f["candidates"]] for f in local["faces"]]
    assert remote["search_id"] != local["search_id"]  # two searches, both recorded
    assert not (tmp_path / "nowhere").exists()  # the remote run never touched a data dir
    human = cli("search", PROBES / "obama1.jpg", "--case", "CASE-1").stdout
    assert "obama" in human and "Probe" in human


def test_verify_case_stats_over_the_server(cli):
    pair = (REFERENCE / "obama.jpg", REFERENCE / "obama2.jpg")
    same = json.loads(cli("verify", *pair, "--case", "CASE-1", "--json").stdout)
    assert same["same"] is True and set(same) == {
        "same", "distance", "threshold", "faces_a", "faces_b"
    }  # fmt: skip
    shown = json.loads(cli("case", "show", "CASE-1", "--json").stdout)
    local = json.loads(cli("case", "show", "CASE-1", "--json", remote=False).stdout)
    assert shown == local
    listed = json.loads(cli("case", "list", "--json").stdout)
    assert [c["ref"] for c in listed] == ["CASE-1"]
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats == json.loads(cli("stats", "--json", remote=False).stdout)
    assert stats["faces"] == 5


def test_exit_codes_and_identity_over_the_server(cli, server, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    cases = [
        (("verify", REFERENCE / "obama.jpg", REFERENCE / "obama2.jpg"), "ines", 3, "case_required"),
        (("search", junk, "--case", "CASE-1"), "ines", 2, "not_an_image"),
        (("case", "show", "NOPE"), "admin", 2, "not_found"),
        (("--as", "rita", "stats"), "ines", 3, "not_your_token"),
        (("case", "show", "CASE-1"), "only-reviewer", 3, "not_assigned"),
        (("ingest", junk, "--source", "press"), "only-operator", 2, "not_remote"),
    ]
    for args, user, code, error in cases:
        proc = cli(*args, user=user, ok=False)
        assert (proc.returncode, f"[{error}]" in proc.stderr) == (code, True), (args, proc.stderr)
    no_token = cli("stats", user=None, ok=False)
    assert no_token.returncode == 3 and "no credential" in no_token.stderr
    # a stored token for the server (login), then rotation through the API
    assert "rita" in cli("login", user=None, stdin=server.tokens["rita"] + "\n").stdout
    assert json.loads(cli("case", "list", "--json", user=None).stdout)[0]["ref"] == "CASE-1"
    confirmed = cli("reject", "999999", "1", user=None, ok=False)
    assert confirmed.returncode == 2 and "[not_found]" in confirmed.stderr
