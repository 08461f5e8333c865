"""``facewarden demo``: a working gallery and a search in one command, on bundled photos."""

from __future__ import annotations

import tempfile
from contextlib import suppress
from importlib import resources
from pathlib import Path

from facewarden.cli import output
from facewarden.config import Settings
from facewarden.core.errors import InvalidInput
from facewarden.services.app import Facewarden

DEMO_SOURCE = "demo-press-photos"
DEMO_CASE = "DEMO-1"


def demo_files() -> tuple[Path, Path]:
    root = Path(str(resources.files("facewarden") / "demo_data"))
    return root / "gallery", root / "probe_obama_and_biden.jpg"


def run_demo(s: Settings | None = None) -> None:
    if s is None:
        s = Settings(data_dir=Path(tempfile.mkdtemp(prefix="facewarden-demo-")), template_key=None)
    fw, _ = Facewarden.init(s, admin_name="demo")
    actor = fw.actor(name="demo")
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
        fw.search.search(actor, probe.read_bytes(), case=DEMO_CASE, probe_name=str(probe), top_k=3)
    )
    output.out.print(
        f"\n3. audit chain: {'intact' if fw.audit.verify().ok else 'BROKEN'}; "
        f"{len(fw.audit.events())} records"
    )
    fw.close()
