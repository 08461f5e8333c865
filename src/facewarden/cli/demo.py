"""``facewarden demo``: a working gallery and a search in one command, on bundled photos."""

from __future__ import annotations

import os
import shutil
from contextlib import suppress
from importlib import resources
from pathlib import Path

from facewarden.cli import output
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput, Refused
from facewarden.services.app import Facewarden

DEMO_SOURCE = "demo-press-photos"
DEMO_CASE = "DEMO-1"
DEMO_USER = "demo"
# Written into the default demo directory; only a directory holding it is ever replaced.
DEMO_MARKER = ".facewarden-demo"


def demo_files() -> tuple[Path, Path]:
    root = Path(str(resources.files("facewarden") / "demo_data"))
    return root / "gallery", root / "probe_obama_and_biden.jpg"


def default_demo_dir() -> Path:
    """The one directory every ``facewarden demo`` without ``--data-dir`` uses."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "facewarden" / "demo"


def fresh_demo_dir(path: Path) -> Path:
    """Empty ``path`` for a new demo run: the previous run's database and key go with it.

    Only a directory an earlier demo created (it holds ``DEMO_MARKER``) is removed; anything
    else at that path is refused rather than deleted.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not (path / DEMO_MARKER).is_file():
            raise InvalidInput(
                f"{path} exists and was not made by 'facewarden demo'; move it away, or run "
                "'facewarden --data-dir DIR demo'"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    (path / DEMO_MARKER).write_text("made by 'facewarden demo'; replaced by its next run\n")
    return path


def run_demo(s: Settings | None = None) -> None:
    """Ingest the bundled photos, open a case, search, verify the audit chain.

    Without settings the demo runs on the embedded default (SQLite and FAISS) in
    ``default_demo_dir()``, which each run replaces, so runs leave one copy behind, not one each.
    """
    if s is None:
        s = Settings(
            data_dir=fresh_demo_dir(default_demo_dir()),
            database_url=None,
            index="faiss",
            template_key=None,
        )
    else:  # --data-dir: a new directory, or one an earlier demo made (never anyone's data)
        s = s.model_copy(update={"data_dir": fresh_demo_dir(s.data_dir)})
    fw, token = Facewarden.init(s, admin_name=DEMO_USER)
    try:
        if token is None:
            # The database already had users (e.g. a PostgreSQL database that outlived the
            # directory): the demo never acts as someone by name.
            raise Refused(
                "the demo needs a new database: this one already has users",
                code="not_a_new_database",
            )
        actor = fw.actor(token=token)
        output.out.print(f"[bold]facewarden demo[/] in {s.data_dir}")
        gallery, probe = demo_files()
        with suppress(InvalidInput):  # already registered by an earlier run in this directory
            fw.sources.add(
                actor,
                DEMO_SOURCE,
                lawful_basis="demonstration only (MIT-licensed press photos)",
                purpose="show facewarden working",
                jurisdiction="US",
                retention="1d",
                note="face_recognition project examples",
            )
        output.out.print(f"\n1. ingest {gallery} into source {DEMO_SOURCE}")
        output.show_ingest(fw.ingest.run(actor, [gallery], DEMO_SOURCE, workers=1))
        with suppress(InvalidInput):
            fw.cases.open(
                actor,
                DEMO_CASE,
                purpose="demonstration",
                legal_basis="demonstration only",
                authorisation="DEMO",
                expires="1d",
            )
        output.out.print(f"\n2. search {probe.name} within case {DEMO_CASE}")
        output.show_search(
            fw.search.search(
                actor, probe.read_bytes(), case=DEMO_CASE, probe_name=str(probe), top_k=3
            )
        )
        output.out.print(
            f"\n3. audit chain: {'intact' if fw.audit.verify().ok else 'BROKEN'}; "
            f"{len(fw.audit.events())} records"
        )
    finally:
        fw.close()
    show_next_steps(s, token)


def show_next_steps(s: Settings, token: str | None) -> None:
    data_dir = str(s.data_dir)
    login = (
        f"log in with the token of user {DEMO_USER}: {token}"
        if token
        else (
            "log in with the token printed when this directory was first used, or make one: "
            f"facewarden --data-dir {data_dir} user add NAME --role investigator"
        )
    )
    output.out.print(
        "\n[bold]Next steps[/]\n"
        f"- Open the web console on the demo data: facewarden --data-dir {data_dir} serve\n"
        f"  then http://{s.host}:{s.port}/ and {login}\n"
        "- Take the five-minute tour: README.md, section 'A five-minute tour' (the same commands "
        "on your own data directory; more in docs/README.md)",
        highlight=False,
        soft_wrap=True,
    )
