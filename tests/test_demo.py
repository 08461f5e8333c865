"""``facewarden demo`` keeps one directory (no database and key left behind per run) and says
what to do next."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from facewarden.cli import output
from facewarden.cli.demo import DEMO_MARKER, DEMO_USER, default_demo_dir, run_demo
from facewarden.core.errors import InvalidInput


@pytest.fixture
def homes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty cache home and an empty temporary directory, watched by the tests."""
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    cache.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    # Settings the demo must not take from the environment: it runs on the embedded default.
    monkeypatch.setenv("FACEWARDEN_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("FACEWARDEN_INDEX", "qdrant")
    monkeypatch.setenv("FACEWARDEN_WORKERS", "1")
    monkeypatch.setattr(output.out, "width", 400)  # long checkout paths: no wrapped table cells
    return cache, tmp


def test_repeated_demos_leave_one_directory_and_print_next_steps(homes, capsys):
    cache, tmp = homes
    run_demo()
    first = capsys.readouterr().out
    demo_dir = default_demo_dir()
    assert demo_dir.is_relative_to(cache) and (demo_dir / DEMO_MARKER).is_file()
    key_before = (demo_dir / "template.key").read_bytes()
    run_demo()
    second = capsys.readouterr().out
    # One demo directory, replaced: a new key, and nothing written to the temporary directory.
    assert [p.name for p in cache.rglob("template.key")] == ["template.key"]
    assert (demo_dir / "template.key").read_bytes() != key_before
    assert list(tmp.iterdir()) == []
    for out in (first, second):
        flat = "".join(out.split())  # the table may wrap long paths at the terminal's width
        assert "obama.jpg" in flat and "biden.jpg" in flat and "auditchain:intact" in flat
        assert f"facewarden--data-dir{demo_dir}serve" in flat
        assert "Afive-minutetour" in flat
    token = second.split("log in with the token of user demo: ", 1)[1].split()[0]
    assert len(token) > 30


@pytest.mark.usefixtures("homes")
def test_a_directory_the_demo_did_not_make_is_never_deleted():
    mine = default_demo_dir()
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("not a demo")
    with pytest.raises(InvalidInput, match="not made by 'facewarden demo'"):
        run_demo()
    assert (mine / "notes.txt").read_text() == "not a demo"


def test_the_demo_never_acts_in_an_existing_installation(tmp_path, monkeypatch):
    """``facewarden --data-dir DIR demo`` on someone's data directory is refused: the demo
    would otherwise act by the bare name ``demo`` in a gallery it did not make."""
    from facewarden.config import Settings
    from facewarden.services.app import Facewarden

    monkeypatch.setenv("FACEWARDEN_DETECTOR", "hog")
    settings = Settings(data_dir=tmp_path / "data")
    app, _ = Facewarden.init(settings, admin_name=DEMO_USER)  # a user named like the demo's
    app.close()
    with pytest.raises(InvalidInput, match="not made by 'facewarden demo'"):
        run_demo(settings)
    app = Facewarden(settings)
    assert [e["actor"] for e in app.audit.events()] == [DEMO_USER]  # only its own init
    app.close()
