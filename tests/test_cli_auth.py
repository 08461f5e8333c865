"""The CLI acts by credential: the token file init writes, FACEWARDEN_TOKEN, ``login``;
token lifecycle commands; exit codes of every kind of error (2 bad input, 3 refused)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from sqlalchemy import create_engine, text

from conftest import GALLERY, PROBES, REFERENCE, cli_runner, copy_token_file

pytestmark = pytest.mark.slow  # every test runs the CLI in subprocesses (5 to 20 s each)


def auth_cli(tmp_path: Path, database_url: str | None) -> Callable[..., CompletedProcess]:
    """``cli_runner`` on ``tmp_path / "data"`` that also checks a failing command printed no
    traceback."""
    base = cli_runner(tmp_path / "data", database_url)

    def run(*args, ok=True, token=None, stdin=None):
        proc = base(*args, ok=ok, token=token, stdin=stdin)
        if not ok:
            assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    run.env = base.env
    run.batch = base.batch
    run.tmp = tmp_path
    return run


@pytest.fixture
def initialised(tmp_path, database_url):
    """A gallery set up through the CLI by this test, ``init`` included."""
    cli = auth_cli(tmp_path, database_url)
    cli("init")
    cli(
        "source", "add", "press", "--lawful-basis", "b", "--purpose", "p",
        "--jurisdiction", "FR", "--retention", "365d",
    )  # fmt: skip
    cli("ingest", GALLERY, "--source", "press")
    cli("case", "open", "C-1", "--purpose", "p", "--legal-basis", "b", "--authorisation", "a")
    return cli


@pytest.fixture
def installed(cli_gallery_seed, tmp_path):
    """This test's copy of the session's CLI-built gallery (case C-1), its operator holding
    the token ``init`` stored."""
    with cli_gallery_seed.copy(tmp_path / "data") as database_url:
        copy_token_file(cli_gallery_seed.data_dir, tmp_path / "data")
        yield auth_cli(tmp_path, database_url)


def token_files(cli) -> list:
    folder = cli.tmp / "config" / "facewarden" / "tokens"
    return sorted(folder.iterdir()) if folder.exists() else []


def test_init_stores_the_token_for_its_os_account_only(initialised):
    installed = initialised
    (path,) = token_files(installed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # a token file others can read identifies no one: refused until fixed
    path.chmod(0o644)
    proc = installed("stats", ok=False)
    assert proc.returncode == 3 and "[insecure_token_file]" in proc.stderr
    path.chmod(0o600)
    assert json.loads(installed("stats", "--json").stdout)["faces"] == 5
    # without any credential nothing runs
    path.unlink()
    proc = installed("stats", ok=False)
    assert proc.returncode == 3 and "no credential" in proc.stderr


def test_second_person_logs_in_and_rotation_replaces_the_stored_token(installed):
    rita = installed("user", "add", "rita", "--role", "reviewer").stdout.strip().splitlines()[-1]
    # the operator's shell cannot act as rita, and the refusal is in the log
    forged = installed("--as", "rita", "case", "list", ok=False)
    assert forged.returncode == 3 and "[not_your_token]" in forged.stderr
    events = installed("audit", "export").stdout.splitlines()
    assert any(json.loads(e)["action"] == "act_as" for e in events)
    # rita, on her own account (here: a copy of the environment), stores her token
    (admin_file,) = token_files(installed)
    admin_token = admin_file.read_text().strip()
    assert "rita" in installed("--as", "rita", "login", stdin=rita + "\n").stdout
    assert installed("--as", "rita", "case", "list").returncode == 0
    # she rotates her token: the stored one follows, the old one is dead
    new = installed("user", "token", "rotate").stdout.strip().splitlines()[-1]
    assert new != rita and admin_file.read_text().strip() == new
    dead = installed("case", "list", ok=False, token=rita)
    assert dead.returncode == 3 and "[unauthenticated]" in dead.stderr
    # the admin disables her: her stored token stops working at once
    installed("user", "disable", "rita", token=admin_token)
    disabled = installed("case", "list", ok=False)
    assert disabled.returncode == 3 and "[user_disabled]" in disabled.stderr
    listed = json.loads(installed("user", "list", "--json", token=admin_token).stdout)
    assert {u["name"]: u["active"] for u in listed} == {"admin": True, "rita": False}
    assert all(u["last_used_at"] for u in listed)


def test_expired_token_is_refused_clearly_and_its_owner_rotates_it(installed):
    url = installed.env.get("FACEWARDEN_DATABASE_URL") or (
        f"sqlite:///{installed.tmp / 'data' / 'facewarden.db'}"
    )
    bob = installed("user", "add", "bob", "--role", "reviewer").stdout.strip().splitlines()[-1]
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET token_issued_at = :t WHERE name = 'admin'"), {"t": "2020-01-01"}
        )
    engine.dispose()
    proc = installed("stats", ok=False)
    assert proc.returncode == 3 and "[token_expired]" in proc.stderr
    # An expired token rotates itself only: never someone else's, even with --as their name.
    for args in (("user", "token", "rotate", "bob"), ("--as", "bob", "user", "token", "rotate")):
        stolen = installed(*args, ok=False)
        assert stolen.returncode == 3, stolen.stderr
        assert "[not_your_token]" in stolen.stderr or "[token_expired]" in stolen.stderr
    assert installed("case", "list", token=bob).returncode == 0  # bob's token still works
    installed("user", "token", "rotate")
    assert json.loads(installed("stats", "--json").stdout)["faces"] == 5


def test_every_error_has_its_exit_code(installed, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 200), "white").save(blank)
    obama = REFERENCE / "obama.jpg"
    cases = [
        (("search", junk, "--case", "C-1"), 2, "not_an_image"),
        (("verify", obama, blank, "--case", "C-1"), 2, "no_face"),
        (("verify", obama, junk, "--case", "C-1"), 2, "not_an_image"),
        (("user", "disable", "nobody"), 2, "not_found"),
        (("case", "show", "NOPE"), 2, "not_found"),
        (("search", tmp_path / "missing.jpg", "--case", "C-1"), 2, "invalid_input"),
        (("verify", obama, obama), 3, "case_required"),
        (("verify", obama, obama, "--case", "NOPE"), 3, "case_required"),
        (("--as", "nobody", "stats"), 3, "not_your_token"),
        (("search", PROBES / "obama1.jpg"), 3, "case_required"),
    ]
    # All of them through the CLI's entry point in one process (conftest.run_batch), and the
    # first of each exit code also as a ``facewarden`` process of its own.
    checks = list(zip(cases, installed.batch(*[args for args, _, _ in cases]), strict=True))
    firsts = {code: (args, code, error) for args, code, error in reversed(cases)}
    checks += [(case, installed(*case[0], ok=False)) for case in firsts.values()]
    for (args, code, error), proc in checks:
        assert "Traceback" not in proc.stderr, proc.stderr
        assert (proc.returncode, f"[{error}]" in proc.stderr) == (code, True), (args, proc.stderr)
